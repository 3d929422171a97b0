"""Multi-scale token aggregation and the Primus-style decoder of MedDINOv3, for 2D and 3D ViTs.

MedDINOv3 concatenates the (final-normed) patch tokens of several intermediate blocks, reshapes
them to the patch grid, and decodes with log2(patch) stages of transposed convolution (k=2, s=2)
+ LayerNorm over channels + GELU, each halving the channels, then a 1x1 convolution to classes.
The stages of ``decode`` match MedDINOv3's ``up_projection.decode.*`` keys (stage i at
``decode.i.0`` / ``decode.i.1``). MedDINOv3 keeps the classifier at ``decode.<num_stages>``; here it
is ``seg_layers.0`` so that nnU-Net's ``-pretrained_weights`` re-initialises it, and the old key
still loads (``_load_from_state_dict``).
"""
import math
from typing import List, Sequence, Union

import torch
from dynamic_network_architectures.building_blocks.patch_encode_decode import LayerNormNd
from torch import nn

from nnfm.networks.seg_layers import rename_old_keys

_CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def evenly_spaced_blocks(depth: int, count: int = 4) -> List[int]:
    """Block indices to aggregate: [2, 5, 8, 11] for depth 12, the same spacing for deeper models."""
    if count < 1 or count > depth:
        raise ValueError(f"Cannot take {count} of {depth} blocks.")
    step = depth / count
    return [int(round(step * (i + 1))) - 1 for i in range(count)]


def tokens_to_grid(tokens: Sequence[torch.Tensor], grid: Sequence[int]) -> torch.Tensor:
    """Patch tokens [(B, N, D), ...] of several blocks -> one (B, len * D, *grid) feature map.

    Tokens must be patch tokens only (no class or register tokens), in row-major grid order.
    """
    batch = tokens[0].shape[0]
    maps = [t.transpose(1, 2).reshape(batch, t.shape[-1], *grid) for t in tokens]
    return torch.cat(maps, dim=1)


class PrimusStyleDecoder(nn.Module):
    """(B, in_channels, *grid) -> (B, num_classes, *(grid * patch_size)).

    ``patch_size`` is an int or one power of two per axis; an axis that needs fewer doublings
    than the largest gets stride 1 in the first stages, so anisotropic patches work too.
    """

    def __init__(self, in_channels: int, num_classes: int, patch_size: Union[int, Sequence[int]], ndim: int):
        super().__init__()
        patch = [patch_size] * ndim if isinstance(patch_size, int) else list(patch_size)
        if len(patch) != ndim or any(p < 1 or p & (p - 1) for p in patch):
            raise ValueError(f"patch_size must be {ndim} powers of two, got {patch_size}")
        num_stages = int(math.log2(max(patch)))
        stages, channels = [], in_channels
        for stage in range(num_stages):
            # the last log2(p) stages of an axis double it; earlier ones keep it
            stride = [2 if stage >= num_stages - int(math.log2(p)) else 1 for p in patch]
            out = max(1, channels // 2)
            stages.append(nn.Sequential(_CONV_TRANSPOSE[ndim](channels, out, kernel_size=stride, stride=stride),
                                        LayerNormNd(out), nn.GELU()))
            channels = out
        self.decode = nn.Sequential(*stages)
        # registered after decode: parameter order (optimizer state of resumed runs) stays as before
        self.seg_layers = nn.ModuleList([_CONV[ndim](channels, num_classes, kernel_size=1)])
        self.num_stages = num_stages
        self.out_channels_before_classifier = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seg_layers[0](self.decode(x))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints before issue 13 hold the classifier as the last entry of decode
        rename_old_keys(state_dict, prefix, {f"decode.{self.num_stages}.": "seg_layers.0."})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
