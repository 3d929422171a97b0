"""iBOT block masking of the student's global crops (rectangles of patches, then random patches to top up)."""
import math
from typing import Tuple

import numpy as np
import torch


def block_mask(grid: Tuple[int, int], n_masked: int, rng: np.random.Generator,
               min_block: int = 4, aspect: Tuple[float, float] = (0.3, 1 / 0.3)) -> np.ndarray:
    """Boolean [h, w] mask with exactly ``n_masked`` True, mostly in rectangles as in BEiT/iBOT."""
    h, w = grid
    n_masked = int(min(max(n_masked, 0), h * w))
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(10 * n_masked + 10):
        missing = n_masked - int(mask.sum())
        if missing <= 0:
            break
        area = rng.uniform(min(min_block, missing), missing)
        ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
        bh, bw = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if not (1 <= bh <= h and 1 <= bw <= w):
            continue
        top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
        block = mask[top:top + bh, left:left + bw]
        if int((~block).sum()) <= missing:                           # never overshoot the target
            block[:] = True
    missing = n_masked - int(mask.sum())
    if missing > 0:                                                  # top up with single patches
        free = np.flatnonzero(~mask.reshape(-1))
        mask.reshape(-1)[rng.choice(free, missing, replace=False)] = True
    return mask


def global_crop_masks(n_images: int, grid: Tuple[int, int], rng: np.random.Generator,
                      probability: float = 0.5, ratio: Tuple[float, float] = (0.1, 0.5)) -> torch.Tensor:
    """[n_images, h, w] bool. The first ``max(1, round(p * n))`` images are masked (at least one, so the
    iBOT head always gets tokens, which DDP requires), each with a ratio drawn uniformly from ``ratio``."""
    n_tokens = grid[0] * grid[1]
    n_with_mask = max(1, int(round(probability * n_images)))
    masks = np.zeros((n_images, *grid), dtype=bool)
    for i in range(n_with_mask):
        masks[i] = block_mask(grid, max(1, int(round(rng.uniform(*ratio) * n_tokens))), rng)
    return torch.from_numpy(masks)
