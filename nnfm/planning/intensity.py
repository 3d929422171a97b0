"""Measure, per channel, the intensity window an encoder's [0, 1] input range should cover.

Pretrained encoders such as anatomix saw each volume clipped to its 0.5 / 99.5 percentiles and
scaled to [0, 1]. We express those percentiles in the units nnU-Net's normalisation produces, so
the network's IntensityWindow turns nnU-Net's data into what the encoder expects.
"""
from os.path import join
from typing import Dict, List, Sequence

import numpy as np
import nnunetv2
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

MAX_CASES = 20
PERCENTILES = (0.5, 99.5)


def _normalizer(scheme: str, use_mask: bool, intensity_properties: dict):
    cls = recursive_find_python_class(join(nnunetv2.__path__[0], "preprocessing", "normalization"), scheme,
                                      "nnunetv2.preprocessing.normalization")
    return cls(use_mask_for_norm=use_mask, intensityproperties=intensity_properties)


def _sample(keys: Sequence[str], max_cases: int, seed: int) -> List[str]:
    """A seeded choice of up to ``max_cases`` of ``keys`` (sorted first), in sorted order: the same cases every run."""
    keys = sorted(keys)
    rng = np.random.default_rng(seed)
    return [keys[i] for i in sorted(rng.choice(len(keys), min(max_cases, len(keys)), replace=False))]


def _median_window(per_case: list) -> List[List[float]]:
    """Per channel, the median over cases of each case's (low, high) percentiles, rounded to 4 decimals."""
    window = np.median(np.asarray(per_case, dtype=np.float64), axis=0)
    return [[round(float(lo), 4), round(float(hi), 4)] for lo, hi in window]


def measure_input_window(dataset: Dict[str, dict], reader_writer_class, schemes: Sequence[str],
                         use_mask: Sequence[bool], intensity_properties: Dict[str, dict],
                         max_cases: int = MAX_CASES, seed: int = 1234) -> List[List[float]]:
    """Median over (up to ``max_cases``) training cases of each channel's normalised percentiles."""
    keys = _sample(dataset, max_cases, seed)
    reader = reader_writer_class()
    per_case = []
    for key in keys:
        data, _ = reader.read_images(dataset[key]["images"])
        data, seg, _ = crop_to_nonzero(data.astype(np.float32), None)  # as nnU-Net's preprocessor does
        lows_highs = []
        for c, scheme in enumerate(schemes):
            normalized = _normalizer(scheme, use_mask[c], intensity_properties[str(c)]).run(data[c].copy(), seg[0])
            inside = normalized[seg[0] >= 0] if use_mask[c] else normalized.ravel()
            lows_highs.append(np.percentile(inside, PERCENTILES))
        per_case.append(lows_highs)
    return _median_window(per_case)


def measure_preprocessed_window(folder: str, use_mask: Sequence[bool], max_cases: int = MAX_CASES,
                                seed: int = 1234) -> List[List[float]]:
    """``measure_input_window`` on nnU-Net's preprocessed cases (already cropped and normalised: the network's own
    units): median over up to ``max_cases`` cases (all cases of the folder, a seeded choice, so every fold of a model
    gets the same window) of each channel's 0.5 / 99.5 percentiles, inside the nonzero mask (seg >= 0) for the
    channels nnU-Net normalises there. ValueError for an empty folder or a channel constant in every case."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    dataset_class = infer_dataset_class(folder)
    keys = dataset_class.get_identifiers(folder)
    if not keys:
        raise ValueError(f"no preprocessed cases in {folder}")
    keys = _sample(keys, max_cases, seed)
    dataset = dataset_class(folder, keys)
    per_case = []
    for key in keys:
        data, seg, _, _ = dataset.load_case(key)
        inside = np.asarray(seg[0]) >= 0
        lows_highs = []
        for c, masked in enumerate(use_mask):
            channel = np.asarray(data[c], dtype=np.float32)
            lows_highs.append(np.percentile(channel[inside] if masked else channel.ravel(), PERCENTILES))
        per_case.append(lows_highs)
    window = _median_window(per_case)
    if any(hi <= lo for lo, hi in window):
        raise ValueError(f"a channel of the cases in {folder} has no intensity range (window {window})")
    return window
