"""Pretrained weights: registry, cache/download, safe reading, verification and loading."""
# every module that registers checkpoint families (nnfm/weights/families.py, a leaf): imported here so that any
# import from nnfm.weights has them all registered before one is detected or looked up (timm's models/__init__.py)
from nnfm.weights import (filters, filters_anatomix_dev, filters_drasclr, filters_lvmmed,  # noqa: F401
                          filters_plainconv, filters_primus_v2, filters_resenc)
from nnfm.weights.loading import check_weights_source, load_pretrained, pretrained_target, resolve_checkpoint
from nnfm.weights.random_init import is_random_init
from nnfm.weights.registry import WeightsEntry, available_weights, get_weights_entry, register_weights
from nnfm.weights.report import LoadReport

__all__ = ["check_weights_source", "is_random_init", "load_pretrained", "pretrained_target", "resolve_checkpoint",
           "WeightsEntry", "available_weights", "get_weights_entry", "register_weights", "LoadReport"]
