"""Smooth random fields: the one building block behind shapes, textures, bias fields and warps."""
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter


def _resize(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=True)[0, 0].numpy()


def smooth_field(rng: np.random.Generator, shape: Sequence[int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std random field whose features are about ``scale`` voxels across.

    Coarse noise is upsampled in two steps with a Gaussian blur in between: plain trilinear
    upsampling leaves grid-aligned facets that show up as polygonal edges once thresholded.
    """
    shape = tuple(int(s) for s in shape)
    counts = [max(2, int(round(s / max(scale, 1.0))) + 1) for s in shape]
    coarse = rng.standard_normal(counts).astype(np.float32)
    mid_shape = [min(s, max(4 * c, s // 4)) for s, c in zip(shape, counts)]
    mid = _resize(coarse, mid_shape)
    mid = gaussian_filter(mid, sigma=[0.5 * m / c for m, c in zip(mid_shape, counts)], mode="nearest")
    field = _resize(mid, shape) if tuple(mid_shape) != shape else mid
    field -= field.mean()
    return field / (field.std() + 1e-6)


def fine_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Voxel-scale correlated noise (tissue grain), zero mean and unit std."""
    noise = rng.standard_normal(tuple(shape)).astype(np.float32)
    if sigma > 0:
        noise = gaussian_filter(noise, sigma=sigma, mode="reflect")
    noise -= noise.mean()
    return noise / (noise.std() + 1e-6)

