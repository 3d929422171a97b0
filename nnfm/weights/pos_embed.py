"""Resize a learned 3D position embedding (B=1, N, D) from one patch-token grid to another.

nnssl pretrains Primus-M on 160^3 patches (a 20^3 token grid, ``eva.pos_embed`` [1, 8000, 864]);
nnU-Net fine-tunes on the dataset's patch, e.g. 40x56x40 (5x7x5 tokens). Tokens are stored in
row-major grid order (Primus flattens (B, D, X, Y, Z) -> (B, X*Y*Z, D)). The grid is resized with
trilinear interpolation, align_corners=False: token centres map to the same relative position
inside the patch, so a linear ramp over the grid stays a linear ramp.
"""
import math
from typing import Any, Optional, Sequence

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


def checkpoint_token_grid(checkpoint: Any, num_tokens: int, patch_embed_size: int = 8) -> Optional[list]:
    """The token grid a checkpoint's position embedding was trained on, or None if unknown.

    Read from the checkpoint's own metadata: an nnU-Net checkpoint's ``init_args`` plans (the
    configuration's ``arch_kwargs.input_shape`` or ``patch_size``), an nnssl file's adaptation plan
    (``pretrain_plan`` patch, then ``recommended_downstream_patchsize``); each patch / ``patch_embed_size``
    must hold exactly ``num_tokens`` tokens. Without such metadata: the cube of ``num_tokens``.
    """
    candidates = []
    if isinstance(checkpoint, dict):
        init = checkpoint.get("init_args")
        plans = init.get("plans") if isinstance(init, dict) else None
        if isinstance(plans, dict):
            config = (plans.get("configurations") or {}).get(init.get("configuration")) or {}
            kwargs = (config.get("architecture") or {}).get("arch_kwargs") or {}
            candidates += [kwargs.get("input_shape"), config.get("patch_size")]
        plan = checkpoint.get("nnssl_adaptation_plan")
        if isinstance(plan, dict):
            configurations = (plan.get("pretrain_plan") or {}).get("configurations") or {}
            candidates += [c.get("patch_size") for c in configurations.values() if isinstance(c, dict)]
            candidates.append(plan.get("recommended_downstream_patchsize"))
    for patch in candidates:
        if isinstance(patch, (list, tuple)) and len(patch) == 3:
            grid = [int(p) // patch_embed_size for p in patch]
            if math.prod(grid) == num_tokens:
                return grid
    try:
        return cubic_grid(num_tokens)
    except ValueError:
        return None
