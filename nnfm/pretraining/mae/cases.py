"""Which cases of an nnU-Net preprocessed folder pretraining may use, and reading their images only.

Labels are never opened: nnU-Net's ``load_case`` opens ``<case>_seg.b2nd`` (or the ``seg`` array of an
``.npz``) next to the image, so images are opened here directly, by file name, in the layouts nnU-Net
2.x writes: ``<case>.b2nd`` (blosc2), ``<case>.npy`` (unpacked) or ``<case>.npz`` (key ``data`` only).
"""
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from nnfm.errors import ConfigurationError

BENCHMARK_MARKER_KEY = "held_out_test_cases"     # nnfm/benchmark/data.py writes it into nnfm_benchmark_source.json


def list_cases(folder) -> List[str]:
    """Case identifiers of a preprocessed folder, from file names only (sorted)."""
    names = os.listdir(folder)
    cases = {n[:-5] for n in names if n.endswith(".b2nd") and not n.endswith("_seg.b2nd")}
    cases |= {n[:-4] for n in names if n.endswith(".npz")}
    cases |= {n[:-4] for n in names if n.endswith(".npy") and not n.endswith("_seg.npy")}
    if not cases:
        raise ConfigurationError(f"no preprocessed cases (.b2nd / .npz / .npy) in {folder}")
    return sorted(cases)


def read_exclusions(path, fold: int = 0) -> List[str]:
    """Case identifiers to hold out, from a JSON file in one of three forms.

    - a list of identifiers: ``["hippocampus_001", ...]``;
    - an nnU-Net splits file (``splits_final.json``: ``[{"train": [...], "val": [...]}, ...]``): the ``val``
      cases of fold ``fold`` (the cases that fold is evaluated on);
    - nnFM's benchmark marker (``nnfm_benchmark_source.json``): its ``held_out_test_cases``.
    Raises ConfigurationError for anything else.
    """
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"--exclude-split {path}: cannot read JSON ({error})") from None
    if isinstance(content, dict) and BENCHMARK_MARKER_KEY in content:
        return [str(c) for c in content[BENCHMARK_MARKER_KEY]]
    if isinstance(content, list) and all(isinstance(c, str) for c in content):
        return list(content)
    if isinstance(content, list) and all(isinstance(c, dict) and "val" in c for c in content):
        if not 0 <= fold < len(content):
            raise ConfigurationError(f"--exclude-split {path} has folds 0..{len(content) - 1}, not {fold}")
        return [str(c) for c in content[fold]["val"]]
    raise ConfigurationError(f"--exclude-split {path}: expected a JSON list of case ids, an nnU-Net splits file "
                             f"or an object with '{BENCHMARK_MARKER_KEY}'")


def select_cases(folder, exclude: Iterable[str] = ()) -> Tuple[List[str], List[str]]:
    """(cases used, excluded cases present in the folder). ConfigurationError if nothing is left."""
    cases, excluded = list_cases(folder), set(exclude)
    used = [c for c in cases if c not in excluded]
    if not used:
        raise ConfigurationError(f"all {len(cases)} cases of {folder} are excluded; nothing left to pretrain on")
    return used, [c for c in cases if c in excluded]


class ImageReader:
    """Lazily opened image arrays ``[C, Z, Y, X]`` of a preprocessed folder, with per-case z-score statistics.

    Handles are opened once per process (fresh ones in each DataLoader worker). ``stats(case)`` is the
    mean and standard deviation of each channel over the whole image (computed once per process), used
    for the per-image z-score of nnssl's preprocessing (``default_preprocessor.normalize``).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self._open: Dict[str, object] = {}
        self._stats: Dict[str, np.ndarray] = {}
        self._pid = os.getpid()

    def _path(self, case: str, ending: str) -> Path:
        return self.folder / f"{case}{ending}"

    def image(self, case: str):
        if self._pid != os.getpid():
            self._open, self._stats, self._pid = {}, {}, os.getpid()
        if case not in self._open:
            self._open[case] = self._load(case)
        return self._open[case]

    def _load(self, case: str):
        if self._path(case, ".b2nd").is_file():
            import blosc2
            blosc2.set_nthreads(1)
            mmap = {} if os.name == "nt" else {"mmap_mode": "r"}
            return blosc2.open(urlpath=str(self._path(case, ".b2nd")), mode="r", dparams={"nthreads": 1}, **mmap)
        if self._path(case, ".npy").is_file():
            return np.load(self._path(case, ".npy"), mmap_mode="r")
        if self._path(case, ".npz").is_file():
            with np.load(self._path(case, ".npz")) as archive:   # reads the 'data' member only
                return archive["data"]
        raise ConfigurationError(f"case {case}: no image file in {self.folder}")

    def shape(self, case: str) -> Sequence[int]:
        return tuple(int(s) for s in self.image(case).shape)

    def stats(self, case: str) -> np.ndarray:
        """(C, 2) float64: mean and std of each channel over the image."""
        if case not in self._stats:
            data = np.asarray(self.image(case)[:], dtype=np.float64)
            flat = data.reshape(data.shape[0], -1)
            self._stats[case] = np.stack([flat.mean(1), flat.std(1)], axis=1)
        return self._stats[case]

    def crop(self, case: str, channel: int, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """z-scored crop (float32, ``size``) of ``channel`` starting at ``start`` (may be negative / run past the
        image: the outside is 0, the mean after z-scoring, as nnU-Net pads data with 0)."""
        image = self.image(case)
        shape = self.shape(case)[1:]
        lo = [max(0, s) for s in start]
        hi = [min(d, s + n) for d, s, n in zip(shape, start, size)]
        out = np.zeros(size, dtype=np.float32)
        if all(h > l for l, h in zip(lo, hi)):
            region = np.asarray(image[channel, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
            mean, std = self.stats(case)[channel]
            target = tuple(slice(l - s, h - s) for l, h, s in zip(lo, hi, start))
            out[target] = (region - mean) / max(std, 1e-8)
        return out


def case_filter(used: List[str], excluded: List[str], requested: Optional[Iterable[str]]) -> Dict[str, object]:
    """Summary entry for the run's report: counts and the excluded cases actually present."""
    return {"cases_used": len(used), "cases_excluded": excluded,
            "excluded_not_found": sorted(set(requested or ()) - set(excluded))}
