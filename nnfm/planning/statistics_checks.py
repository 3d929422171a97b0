"""Check the numbers planning rests on: the fingerprint before planning, the plans before preprocessing.

nnU-Net writes NaN into its fingerprint without a word when a channel has no foreground voxel (its per-case
statistics are NaN) and keeps an existing ``dataset_fingerprint.json`` however it was made (``nnFM_plan_and_preprocess``
re-extracts it only with ``--clean``); a NaN spacing, percentile or standard deviation then travels into the plans
(CT normalisation, nnFM's intensity windows) and into every preprocessed case. These checks stop planning at the
first non-finite or degenerate number, naming the file, the entry and the fix.
"""
import math
from typing import List, Optional, Sequence

from nnfm.errors import DatasetError

INTENSITY_KEYS = ("mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5")


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fingerprint_problems(fingerprint: dict, n_channels: int, ct_channels: Sequence[bool] = ()) -> List[str]:
    """Non-finite or degenerate entries of an nnU-Net dataset fingerprint, one line each."""
    problems = []
    for i, spacing in enumerate(fingerprint.get("spacings", [])):
        if not all(_finite(s) and float(s) > 0 for s in spacing):
            problems.append(f"spacings[{i}] = {list(spacing)} (case {i}): not finite and positive")
    for i, shape in enumerate(fingerprint.get("shapes_after_crop", [])):
        if not all(_finite(s) and float(s) > 0 for s in shape):
            problems.append(f"shapes_after_crop[{i}] = {list(shape)} (case {i}): the image is empty after cropping "
                            f"to its nonzero region")
    if not _finite(fingerprint.get("median_relative_size_after_cropping", 1)):
        problems.append(f"median_relative_size_after_cropping = {fingerprint['median_relative_size_after_cropping']}")
    intensities = fingerprint.get("foreground_intensity_properties_per_channel", {})
    for c in range(n_channels):
        stats = intensities.get(str(c), intensities.get(c))
        if stats is None:
            problems.append(f"foreground_intensity_properties_per_channel has no entry for channel {c}")
            continue
        bad = [f"{k} = {stats[k]}" for k in INTENSITY_KEYS if k in stats and not _finite(stats[k])]
        if bad:
            problems.append(f"channel {c} foreground intensities: {', '.join(bad)}")
        elif c < len(ct_channels) and ct_channels[c] and not float(stats["percentile_99_5"]) > \
                float(stats["percentile_00_5"]):
            problems.append(f"channel {c} (CT-normalised) foreground intensities have no range: 0.5 and 99.5 "
                            f"percentiles both {stats['percentile_00_5']}")
    return problems


def check_fingerprint(fingerprint: dict, fingerprint_file, n_channels: int, rerun_command: str,
                      ct_channels: Sequence[bool] = ()) -> None:
    """DatasetError naming ``fingerprint_file``'s non-finite or degenerate entries and the command that re-extracts
    it (after nnFM's dataset check)."""
    problems = fingerprint_problems(fingerprint, n_channels, ct_channels)
    if problems:
        raise DatasetError(
            f"The dataset fingerprint {fingerprint_file} holds non-finite or degenerate statistics; planning on them "
            f"would put NaN into the plans and every preprocessed case:\n"
            + "\n".join(f"    {p}" for p in problems)
            + "\nFix: extract the fingerprint again (--clean), after nnFM's check of every image, which names the files "
              "behind these numbers:\n"
            + f"    $ {rerun_command}")


def plans_problems(plans: dict, configuration: str) -> List[str]:
    """Non-finite or degenerate numbers in one configuration of a plans dict (before preprocessing)."""
    config = plans["configurations"][configuration]
    problems = []
    for key in ("patch_size", "median_image_size_in_voxels", "spacing"):
        values = config.get(key, [])
        if not values or not all(_finite(v) and float(v) > 0 for v in values):
            problems.append(f"configurations.{configuration}.{key} = {values}")
    if not (_finite(config.get("batch_size")) and int(config["batch_size"]) >= 1):
        problems.append(f"configurations.{configuration}.batch_size = {config.get('batch_size')}")
    nnfm = config.get("nnfm", {})
    if "estimated_training_memory_gb" in nnfm and not _finite(nnfm["estimated_training_memory_gb"]):
        problems.append(f"configurations.{configuration}.nnfm.estimated_training_memory_gb = "
                        f"{nnfm['estimated_training_memory_gb']}")
    window: Optional[list] = config.get("architecture", {}).get("arch_kwargs", {}).get("input_window")
    for c, bounds in enumerate(window or []):
        low, high = bounds
        if not (_finite(low) and _finite(high)):
            problems.append(f"channel {c}: intensity window {bounds} is not finite")
        elif not float(high) > float(low):
            problems.append(f"channel {c}: intensity window {bounds} has no width (the channel's normalised "
                            f"0.5 and 99.5 percentiles are equal in most measured cases)")
    return problems


def check_plans(plans: dict, configuration: str, plans_file) -> None:
    """DatasetError naming the plans' non-finite or degenerate numbers (the caller removes the plans file)."""
    problems = plans_problems(plans, configuration)
    if problems:
        raise DatasetError(
            f"The plans {plans_file} hold non-finite or degenerate numbers, so nnFM removed them before "
            f"preprocessing:\n" + "\n".join(f"    {p}" for p in problems)
            + "\nFix: check the channels named above (a channel that is nearly constant in most cases gives an "
              "intensity window of no width: remove it from imagesTr and dataset.json channel_names, or supply its "
              "real images), then plan again.")
