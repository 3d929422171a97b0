"""Random label ensembles from procedural shapes (no templates needed).

A volume is built like a body: an optional deformed foreground envelope, filled with a
partition of "tissues" (argmax of smooth noise fields), then overpainted with "organs"
(deformed, randomly rotated ellipsoids and thresholded-noise blobs). Label ids are drawn at
random from 1..max_labels so that no id carries a fixed meaning; 0 is background.
"""
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from nnfm.pretraining.synth.fields import smooth_field


@dataclass
class LabelConfig:
    max_labels: int = 24                  # ids 1..max_labels (0 = background)
    min_shapes: int = 6
    max_shapes: int = 20
    envelope_prob: float = 0.7            # foreground body outline; background outside
    partition_prob: float = 0.8           # fill the foreground with noise "tissues" first
    partition_classes: Tuple[int, int] = (2, 6)
    ellipsoid_prob: float = 0.55          # per shape: deformed ellipsoid, else thresholded-noise blob
    radius_fraction: Tuple[float, float] = (0.05, 0.25)   # ellipsoid semi-axes, fraction of the volume size
    deformation: Tuple[float, float] = (0.0, 0.35)        # implicit-surface noise amplitude
    reuse_id_prob: float = 0.15           # a shape re-uses an id: multi-component labels
    clip_to_envelope_prob: float = 0.8


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    # QR of a Gaussian matrix, sign-fixed, is a uniformly random orthogonal matrix
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _box(center: np.ndarray, half: float, shape: Sequence[int]) -> Tuple[slice, ...]:
    return tuple(slice(max(0, int(c - half)), min(s, int(np.ceil(c + half)) + 1)) for c, s in zip(center, shape))


def _deformed_ellipsoid(rng, shape, center, radii, deformation, box) -> np.ndarray:
    """Boolean mask inside ``box``: |R (x - c) / r|^2 + noise < 1."""
    grids = np.meshgrid(*[np.arange(b.start, b.stop, dtype=np.float32) for b in box], indexing="ij")
    offsets = np.stack([g - c for g, c in zip(grids, center)], axis=-1)
    local = offsets @ _random_rotation(rng).T / radii
    level = (local ** 2).sum(-1)
    if deformation > 0:
        box_shape = level.shape
        level = level + deformation * smooth_field(rng, box_shape, scale=max(2.0, float(radii.min())))
    return level < 1.0


def _envelope(rng, shape) -> np.ndarray:
    size = np.array(shape, dtype=np.float32)
    center = size / 2 + rng.uniform(-0.05, 0.05, 3) * size
    radii = size * rng.uniform(0.38, 0.6, 3)
    box = tuple(slice(0, s) for s in shape)
    return _deformed_ellipsoid(rng, shape, center, radii, rng.uniform(0.1, 0.3), box)


def _partition(rng, shape, classes: int) -> np.ndarray:
    scale = rng.uniform(0.12, 0.35) * min(shape)
    fields = np.stack([smooth_field(rng, shape, scale) for _ in range(classes)])
    return fields.argmax(0)


def _noise_blob(rng, shape, center, half) -> Tuple[Tuple[slice, ...], np.ndarray]:
    box = _box(center, half, shape)
    box_shape = tuple(b.stop - b.start for b in box)
    field = smooth_field(rng, box_shape, scale=max(2.0, half * rng.uniform(0.3, 0.8)))
    # restrict to a ball so blobs stay local instead of filling their bounding box
    grids = np.meshgrid(*[np.arange(b.start, b.stop, dtype=np.float32) for b in box], indexing="ij")
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, center))) / half
    return box, (field - 1.5 * distance ** 2) > rng.uniform(-1.2, 0.0)


class _IdPool:
    """Draws label ids without repetition until the pool runs out, sometimes re-using one on purpose."""

    def __init__(self, rng: np.random.Generator, max_labels: int, reuse_prob: float):
        self.rng, self.reuse_prob = rng, reuse_prob
        self.free = list(rng.permutation(np.arange(1, max_labels + 1)))
        self.used = []

    def next(self) -> int:
        if self.used and (not self.free or self.rng.random() < self.reuse_prob):
            return int(self.rng.choice(self.used))
        label = int(self.free.pop())
        self.used.append(label)
        return label


def random_label_ensemble(rng: np.random.Generator, shape: Sequence[int], config: LabelConfig = None) -> np.ndarray:
    """A ``shape`` int16 label map with ids in 0..max_labels."""
    config = config or LabelConfig()
    shape = tuple(int(s) for s in shape)
    ids = _IdPool(rng, config.max_labels, config.reuse_id_prob)
    labels = np.zeros(shape, dtype=np.int16)
    envelope = _envelope(rng, shape) if rng.random() < config.envelope_prob else np.ones(shape, dtype=bool)
    if rng.random() < config.partition_prob:
        tissues = _partition(rng, shape, int(rng.integers(config.partition_classes[0], config.partition_classes[1] + 1)))
        lut = np.array([ids.next() for _ in range(int(tissues.max()) + 1)], dtype=np.int16)
        labels[envelope] = lut[tissues[envelope]]
    else:
        labels[envelope] = ids.next()
    size = np.array(shape, dtype=np.float32)
    for _ in range(int(rng.integers(config.min_shapes, config.max_shapes + 1))):
        center = rng.uniform(0.1, 0.9, 3) * size
        if rng.random() < config.ellipsoid_prob:
            radii = rng.uniform(*config.radius_fraction, 3).astype(np.float32) * size
            deformation = rng.uniform(*config.deformation)
            box = _box(center, radii.max() * (1 + deformation), shape)
            mask = _deformed_ellipsoid(rng, shape, center, radii, deformation, box)
        else:
            half = rng.uniform(*config.radius_fraction) * min(shape) * 1.3
            box, mask = _noise_blob(rng, shape, center, half)
        if rng.random() < config.clip_to_envelope_prob:
            mask &= envelope[box]
        labels[box][mask] = ids.next()
    return labels
