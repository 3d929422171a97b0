"""Spatial augmentation shared by both views.

It is applied to the label map *before* rendering, so both views are rendered from the same
warped labels and stay voxel-aligned (warping two rendered images separately would need two
interpolations and could drift apart at label edges).
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from nnfm.pretraining.synth.fields import smooth_field


@dataclass
class SpatialConfig:
    affine_prob: float = 0.9
    rotation_degrees: float = 30.0
    scale: Tuple[float, float] = (0.8, 1.2)
    shear: float = 0.08
    translation: float = 0.08            # fraction of the volume size
    elastic_prob: float = 0.6
    elastic_spacing: Tuple[float, float] = (0.12, 0.3)   # control-point spacing, fraction of the size
    elastic_magnitude: Tuple[float, float] = (1.0, 4.0)  # displacement std in voxels
    flip_prob: float = 0.5               # per axis


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_sampling_grid(rng: np.random.Generator, shape: Sequence[int],
                         config: SpatialConfig = None) -> Optional[torch.Tensor]:
    """A ``grid_sample`` grid (1, D, H, W, 3) for a random affine + elastic warp, or None (identity)."""
    config = config or SpatialConfig()
    shape = tuple(int(s) for s in shape)
    use_affine = rng.random() < config.affine_prob
    use_elastic = rng.random() < config.elastic_prob
    if not (use_affine or use_elastic):
        return None
    matrix = np.eye(3)
    offset = np.zeros(3)
    if use_affine:
        angles = np.deg2rad(rng.uniform(-config.rotation_degrees, config.rotation_degrees, 3))
        shear = np.eye(3) + rng.uniform(-config.shear, config.shear, (3, 3)) * (1 - np.eye(3))
        matrix = _rotation(angles) @ shear @ np.diag(1 / rng.uniform(*config.scale, 3))
        offset = rng.uniform(-config.translation, config.translation, 3) * 2    # normalised units
    # normalised voxel coordinates in [-1, 1], ordered (d, h, w) like the array axes
    axes = [torch.linspace(-1, 1, s) for s in shape]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    coords = coords @ torch.as_tensor(matrix.T, dtype=torch.float32) + torch.as_tensor(offset, dtype=torch.float32)
    coords = coords.reshape(*shape, 3)
    if use_elastic:
        spacing = rng.uniform(*config.elastic_spacing) * min(shape)
        magnitude = rng.uniform(*config.elastic_magnitude)
        for axis, size in enumerate(shape):
            displacement = smooth_field(rng, shape, spacing) * magnitude * 2 / (size - 1)
            coords[..., axis] += torch.from_numpy(displacement)
    # grid_sample wants (x, y, z) = (w, h, d) order
    return coords.flip(-1)[None].contiguous()


def warp_labels(labels: np.ndarray, grid: Optional[torch.Tensor]) -> np.ndarray:
    """Nearest-neighbour warp (labels must not be blended); outside the volume becomes background."""
    if grid is None:
        return labels
    tensor = torch.from_numpy(labels.astype(np.float32))[None, None]
    warped = F.grid_sample(tensor, grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return warped[0, 0].round().numpy().astype(labels.dtype)


def warp_image(image: np.ndarray, grid: Optional[torch.Tensor]) -> np.ndarray:
    """Linear warp of an intensity volume with the same grid (used by tests to check alignment)."""
    if grid is None:
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.grid_sample(tensor, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0].numpy()


def random_flips(rng: np.random.Generator, labels: np.ndarray, config: SpatialConfig = None) -> np.ndarray:
    config = config or SpatialConfig()
    axes = tuple(axis for axis in range(3) if rng.random() < config.flip_prob)
    return np.ascontiguousarray(np.flip(labels, axes)) if axes else labels
