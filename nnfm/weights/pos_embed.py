"""Resize a learned 3D position embedding (B=1, N, D) from one patch-token grid to another.

nnssl pretrains Primus-M on 160^3 patches (a 20^3 token grid, ``eva.pos_embed`` [1, 8000, 864]);
nnU-Net fine-tunes on the dataset's patch, e.g. 40x56x40 (5x7x5 tokens). Tokens are stored in
row-major grid order (Primus flattens (B, D, X, Y, Z) -> (B, X*Y*Z, D)). The grid is resized with
trilinear interpolation, align_corners=False: token centres map to the same relative position
inside the patch, so a linear ramp over the grid stays a linear ramp.
"""
from typing import Sequence

import torch
import torch.nn.functional as F


def cubic_grid(num_tokens: int) -> list:
    """The cube grid of ``num_tokens`` tokens (nnssl pretrains on cubic patches); ValueError if none."""
    side = round(num_tokens ** (1 / 3))
    if side ** 3 != num_tokens:
        raise ValueError(f"{num_tokens} tokens do not form a cubic grid")
    return [side] * 3


def resize_pos_embed_3d(pos_embed: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int]) -> torch.Tensor:
    """(1, prod(old_grid), D) -> (1, prod(new_grid), D); the same grid returns the tensor unchanged."""
    old_grid, new_grid = [int(g) for g in old_grid], [int(g) for g in new_grid]
    if pos_embed.dim() != 3 or pos_embed.shape[1] != int(torch.tensor(old_grid).prod()):
        raise ValueError(f"pos_embed of shape {list(pos_embed.shape)} does not hold a {old_grid} token grid")
    if old_grid == new_grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    volume = pos_embed.reshape(1, *old_grid, dim).permute(0, 4, 1, 2, 3)  # (1, D, X, Y, Z)
    resized = F.interpolate(volume.float(), size=new_grid, mode="trilinear", align_corners=False)
    return resized.permute(0, 2, 3, 4, 1).reshape(1, -1, dim).to(pos_embed.dtype)
