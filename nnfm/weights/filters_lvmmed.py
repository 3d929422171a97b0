"""LVM-Med ResNet-50 (torchvision ResNet-50 layout without ``fc``) -> the 2D encoder of nnFM's LVM-Med network.

LVM-Med's own loader (duyhominhnguyen/LVM-Med segmentation_models_pytorch_example/encoders/resnet.py
``ResNetEncoder``: a torchvision ``ResNet`` with ``fc`` and ``avgpool`` deleted) loads the file strictly after
popping ``fc.*``; nnFM's encoder is the same torchvision module, so the keys are identical.
"""
from typing import Any, Dict, Tuple

import torch

from nnfm.weights.families import CheckpointFamily, StateDict, has_prefix, register_family

_FC_REASON = ("classification head of torchvision's ResNet-50; LVM-Med's ResNetEncoder deletes fc and avgpool "
              "(segmentation_models_pytorch_example/encoders/resnet.py) and the segmentation decoder is new")
_DECODER_REASON = "U-Net decoder of an nnFM LVM-Med network; re-initialised for the new task's classes"


def lvmmed_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """Bare torchvision keys load as they are; ``encoder.*`` of an nnFM LVM-Med network loads without the prefix;
    ``fc.*`` and ``decoder.*`` are dropped with their reasons."""
    mapped, dropped = {}, {}
    for key, value in state.items():
        if key.startswith(("fc.", "encoder.fc.")):
            dropped[key] = _FC_REASON
        elif key.startswith("decoder."):
            dropped[key] = _DECODER_REASON
        elif key.startswith("encoder."):
            mapped[key[len("encoder."):]] = value
        else:
            mapped[key] = value  # torchvision names; anything else is reported as unexpected
    return mapped, dropped


def adapt_lvmmed(mapped: StateDict, module: torch.nn.Module, target: StateDict, checkpoint: Any = None
                 ) -> Dict[str, str]:
    """Supply BatchNorm ``num_batches_tracked`` counters a file may lack (the layout notes leave open whether the
    published file has them). The counter only matters for BatchNorm with ``momentum=None``, which torchvision's
    ResNet does not use; it is set to 0, as in a freshly built torchvision model.

    Also prints the weights' licence (CC BY-NC-ND 2.0), so that every log that used them says so."""
    from nnfm.weights.registry import LVMMED_LICENSE

    print(f"nnFM: LVM-Med ResNet-50 weights are licensed {LVMMED_LICENSE}.", flush=True)
    adapted = {}
    for key, value in target.items():
        if key.endswith("num_batches_tracked") and key not in mapped \
                and key[:-len("num_batches_tracked")] + "running_mean" in mapped:
            mapped[key] = torch.zeros_like(value)
            adapted[key] = "absent from the file: BatchNorm counter set to 0 (unused with momentum 0.1)"
    return adapted


register_family(CheckpointFamily(
    "lvmmed_resnet50", lambda k, s: bool({"conv1.weight", "encoder.conv1.weight"} & k)
    and has_prefix(k, "layer1.0.conv1.", "encoder.layer1.0.conv1."),
    "the LVM-Med 2D ResNet-50 in torchvision's layout", lvmmed_filter, "conv1.weight", adapt_lvmmed))
