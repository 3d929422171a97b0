"""Pad inputs up to a multiple of the network stride and crop outputs back.

nnU-Net's default plans choose patch sizes divisible by *its* U-Net's pooling, e.g. 40x56x40 for
Hippocampus, which a 16-stride pretrained network cannot take as is.
"""
import math
from typing import Sequence

from nnfm.errors import PatchSizeError

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    """Zero-pad the spatial dims at their end to a multiple of ``multiple`` (and at least ``minimum``)."""
    pads = []
    for size in reversed(x.shape[2:]):
        pads += [0, max(minimum, size + (-size) % multiple) - size]
    if not any(pads):
        return x
    return F.pad(x, pads)


def crop_to(x: torch.Tensor, spatial: Sequence[int], scale: float) -> torch.Tensor:
    """Crop an output at ``scale`` of the input resolution to the size nnU-Net expects there.

    nnU-Net downsamples deep-supervision targets to ``round(size * scale)``.
    """
    target = [max(1, int(round(s * scale))) for s in spatial]
    if list(x.shape[2:]) == target:
        return x
    slices = tuple(slice(0, t) for t in target)
    return x[(Ellipsis,) + slices]


def padded_shape(spatial: Sequence[int], multiple: int) -> list:
    return [int(math.ceil(s / multiple) * multiple) for s in spatial]


def check_divisible(spatial: Sequence[int], multiple: int, minimum: int = 0) -> None:
    """Raise a PatchSizeError naming the fix when a size cannot go through the network unpadded."""
    bad = [s for s in spatial if s % multiple or s < minimum]
    if bad:
        suggestion = padded_shape(spatial, multiple)
        suggestion = [max(minimum, s) for s in suggestion]
        raise PatchSizeError(
            f"Patch size {list(spatial)} does not fit a network of stride {multiple}: every axis must be "
            f"divisible by {multiple} and at least {minimum}. Use e.g. {suggestion}, "
            f"or let nnFM_plan_and_preprocess -e ENCODER plan the patch size.")
