"""Block masks and the masked reconstruction loss of nnssl's CNN MAE.

Source: MIC-DKFZ/nnssl, ``src/nnssl/training/nnsslTrainer/masked_image_modeling/BaseMAETrainer.py``
(``create_blocky_mask``, ``mask_creation``: ``mask_percentage`` 0.75, ``block_size`` 16, the mask
repeated to voxel resolution, ``masked_data = data * mask``) and ``src/nnssl/training/loss/mse_loss.py``
(``MAEMSELoss``: squared error summed over masked voxels / number of masked voxels).
"""
from typing import Optional, Sequence

import torch

MASK_RATIO = 0.75    # nnssl BaseMAETrainer.mask_percentage
MASK_BLOCK = 16      # nnssl BaseMAETrainer.mask_creation(block_size=16)


def block_mask(batch: int, patch: Sequence[int], ratio: float = MASK_RATIO, block: int = MASK_BLOCK,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B, 1, Z, Y, X) float mask, 1 = visible, 0 = masked.

    Per sample, exactly ``int(ratio * n_blocks)`` of the ``block``^3 blocks are masked (a random
    permutation, as nnssl). ValueError if a patch edge is not a multiple of ``block``.
    """
    if any(p % block for p in patch):
        raise ValueError(f"patch {tuple(patch)} must be a multiple of the mask block {block} on every axis")
    grid = tuple(p // block for p in patch)
    n_blocks = grid[0] * grid[1] * grid[2]
    n_masked = int(ratio * n_blocks)
    masks = []
    for _ in range(batch):
        flat = torch.ones(n_blocks)
        flat[torch.randperm(n_blocks, generator=generator)[:n_masked]] = 0
        masks.append(flat.reshape(grid))
    small = torch.stack(masks)[:, None]
    for axis in (2, 3, 4):
        small = small.repeat_interleave(block, dim=axis)
    return small


def masked_mse(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """nnssl's ``MAEMSELoss``: sum((output - target)^2 * (1 - mask)) / sum(1 - mask); shapes (B, 1, Z, Y, X)."""
    hidden = 1.0 - mask
    return ((output.float() - target) ** 2 * hidden).sum() / hidden.sum().clamp(min=1.0)
