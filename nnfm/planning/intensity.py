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


def measure_input_window(dataset: Dict[str, dict], reader_writer_class, schemes: Sequence[str],
                         use_mask: Sequence[bool], intensity_properties: Dict[str, dict],
                         max_cases: int = MAX_CASES, seed: int = 1234) -> List[List[float]]:
    """Median over (up to ``max_cases``) training cases of each channel's normalised percentiles."""
    keys = sorted(dataset)
    rng = np.random.default_rng(seed)
    keys = [keys[i] for i in sorted(rng.choice(len(keys), min(max_cases, len(keys)), replace=False))]
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
    window = np.median(np.asarray(per_case, dtype=np.float64), axis=0)
    return [[round(float(lo), 4), round(float(hi), 4)] for lo, hi in window]
