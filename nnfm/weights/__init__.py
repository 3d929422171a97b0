"""Pretrained weights: registry, cache/download, safe reading, verification and loading."""
from nnfm.weights.loading import check_weights_source, is_random_init, load_pretrained, resolve_checkpoint
from nnfm.weights.registry import WeightsEntry, available_weights, get_weights_entry, register_weights
from nnfm.weights.report import LoadReport

__all__ = ["check_weights_source", "is_random_init", "load_pretrained", "resolve_checkpoint", "WeightsEntry",
           "available_weights", "get_weights_entry", "register_weights", "LoadReport"]
