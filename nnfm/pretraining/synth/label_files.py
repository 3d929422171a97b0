"""Label maps the user points to (e.g. an nnU-Net ``labelsTr`` folder), mixed into the ensembles.

Each draw reads one file (SimpleITK), resamples it to isotropic voxels at a random scale so its
foreground spans roughly the synthetic volume, crops/pads it to the volume size around the
foreground, and renames its label ids at random so that no id keeps a fixed meaning.
"""
from collections import OrderedDict
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from nnfm.errors import ConfigurationError

SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def find_label_files(folder) -> List[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigurationError(f"--labels-dir {folder} does not exist (a folder of label maps, e.g. nnU-Net's "
                                 f"labelsTr).")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIXES) and not p.name.startswith("."))
    if not files:
        raise ConfigurationError(f"--labels-dir {folder} holds no label maps ({', '.join(SUFFIXES)}).")
    return files


def _read(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk  # only needed when a labels folder is used
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)               # (z, y, x)
    spacing = np.array(image.GetSpacing()[::-1], dtype=np.float64)
    return array.astype(np.int32), spacing


def _nearest_resample(array: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Nearest-neighbour zoom by index lookup (exact for labels, much faster than map_coordinates)."""
    index = []
    for size, factor in zip(array.shape, factors):
        out = max(1, int(round(size * factor)))
        index.append(np.minimum(((np.arange(out) + 0.5) / factor).astype(np.int64), size - 1))
    return array[np.ix_(*index)]


def _crop_or_pad(rng, array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    foreground = np.argwhere(array > 0)
    centre = foreground.mean(0) if len(foreground) else np.array(array.shape) / 2
    out = np.zeros(shape, dtype=array.dtype)
    src, dst = [], []
    for axis, size in enumerate(shape):
        jitter = rng.uniform(-0.15, 0.15) * size
        start = int(round(centre[axis] + jitter - size / 2))
        lo, hi = max(0, start), min(array.shape[axis], start + size)
        if hi <= lo:  # jitter pushed the window off the image: take the centre instead
            lo, hi = 0, min(array.shape[axis], size)
            start = 0
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, lo - start + hi - lo))
    out[tuple(dst)] = array[tuple(src)]
    return out


class LabelMapLibrary:
    """Random crops of the label maps in a folder, with a small per-process cache of decoded files."""

    def __init__(self, folder, cache_size: int = 8):
        self.files = find_label_files(folder)
        self.cache_size = cache_size
        self._cache: "OrderedDict[Path, Tuple[np.ndarray, np.ndarray]]" = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path):
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        item = _read(path)
        self._cache[path] = item
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return item

    def random_label_map(self, rng: np.random.Generator, shape: Sequence[int], max_labels: int) -> np.ndarray:
        array, spacing = self._load(self.files[int(rng.integers(len(self.files)))])
        foreground = np.argwhere(array > 0)
        extent_mm = ((foreground.max(0) - foreground.min(0) + 1) * spacing).max() if len(foreground) else \
            (np.array(array.shape) * spacing).max()
        # isotropic voxels; the foreground's longest side spans 60-110% of the volume
        voxel_mm = extent_mm / (rng.uniform(0.6, 1.1) * min(shape))
        resampled = _nearest_resample(array, spacing / voxel_mm)
        cropped = _crop_or_pad(rng, resampled, shape)
        ids = np.unique(cropped)
        ids = ids[ids > 0]
        lut = np.zeros(int(cropped.max()) + 1, dtype=np.int16)
        # more source labels than ids: some share an id (merging is harmless for contrastive use)
        new_ids = rng.permutation(np.arange(1, max_labels + 1))
        lut[ids] = new_ids[np.arange(len(ids)) % max_labels]
        return lut[cropped]
