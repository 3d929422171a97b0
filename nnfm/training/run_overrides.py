"""Patch size, batch size and validation cases from the environment, for CPU-sized runs of planned networks.

nnU-Net plans the patch and batch for a GPU (about 10 GB). On a CPU, more and smaller steps learn more per
minute, so the demo and the benchmark's CPU profiles train a smaller patch and batch than planned:
``nnFM_PATCH_SIZE`` (e.g. ``32,48,32``, nnU-Net axis order) and ``nnFM_BATCH_SIZE``. The override is written
into the plans the trainer copies to its output folder, so ``nnUNetv2_predict`` slides the window it was
trained with. The same function serves nnFM's trainers and nnU-Net's own (``nnUNetTrainer_nnFMBudget``), so
a benchmark compares them at one patch and batch.

``nnFM_VAL_CASES=N`` keeps the first N (sorted) validation cases of the fold: nnU-Net validates every case of the
fold with 8 mirrored sliding-window passes after training, minutes per run on a CPU when a few-shot fold keeps
fold 0's 32 validation cases, while a benchmark's figure is its held-out test set.
"""
import copy
import os
import re
from typing import List, Optional, Tuple

from nnfm.errors import ConfigurationError

PATCH_VARIABLE, BATCH_VARIABLE, VAL_CASES_VARIABLE = "nnFM_PATCH_SIZE", "nnFM_BATCH_SIZE", "nnFM_VAL_CASES"


def parse_patch(text: str) -> Tuple[int, ...]:
    """'32,48,32' / '32x48x32' / '32 48 32' -> (32, 48, 32); a ConfigurationError names a bad value."""
    parts = [p for p in re.split(r"[,x\s]+", text.strip()) if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigurationError(f"{PATCH_VARIABLE}={text!r} is not a patch size: give positive integers in "
                                 "nnU-Net's axis order, e.g. nnFM_PATCH_SIZE=32,48,32.")
    return tuple(int(p) for p in parts)


def _strides(configuration: dict, n_axes: int) -> Tuple[int, ...]:
    """Per axis, the factor the patch must divide by: the total pooling of the planned network where its kwargs
    give strides (nnU-Net's networks, nnFM's DNA U-Nets at whatever topology their planner chose), else the
    encoder's token stride (ViTs, the anatomix U-Net: registry record)."""
    strides = (configuration.get("architecture") or {}).get("arch_kwargs", {}).get("strides")
    encoder = (configuration.get("nnfm") or {}).get("encoder")
    if not strides and encoder:
        from nnfm.registry import get_encoder
        return (get_encoder(encoder).token_stride,) * n_axes
    total = [1] * n_axes
    for stage in strides or []:
        stage = stage if isinstance(stage, (list, tuple)) else [stage] * n_axes
        total = [t * s for t, s in zip(total, stage)]
    return tuple(total)


def apply_patch_and_batch_overrides(plans: dict, configuration: str,
                                    environ: Optional[dict] = None) -> Tuple[dict, List[str]]:
    """(plans with the environment's patch/batch written into ``configuration``, log lines).

    The input dict is not modified. Raises ConfigurationError, before any training, for a patch with the
    wrong number of axes or an axis not divisible by the network's stride (the fix is in the message).
    """
    environ = os.environ if environ is None else environ
    patch_text, batch_text = environ.get(PATCH_VARIABLE), environ.get(BATCH_VARIABLE)
    if not patch_text and not batch_text:
        return plans, []
    plans = copy.deepcopy(plans)
    config = plans["configurations"][configuration]
    if "inherits_from" in config and ("patch_size" not in config or "batch_size" not in config):
        # write the resolved values into this configuration; its parent stays as planned
        parent = plans["configurations"][config["inherits_from"]]
        config.setdefault("patch_size", parent.get("patch_size"))
        config.setdefault("batch_size", parent.get("batch_size"))
    lines = []
    if patch_text:
        patch = parse_patch(patch_text)
        planned = config["patch_size"]
        if len(patch) != len(planned):
            raise ConfigurationError(f"{PATCH_VARIABLE}={patch_text!r} has {len(patch)} axes but configuration "
                                     f"{configuration!r} is {len(planned)}D (planned patch {planned}).")
        strides = _strides(config, len(patch))
        if any(p % s for p, s in zip(patch, strides)):
            fix = ",".join(str(max(s, p // s * s)) for p, s in zip(patch, strides))
            raise ConfigurationError(f"{PATCH_VARIABLE}={patch_text!r}: the axes must be multiples of "
                                     f"{list(strides)} (this network's stride per axis). Fix: e.g. {fix}.")
        lines.append(f"patch_size {planned} -> {list(patch)} (from {PATCH_VARIABLE})")
        config["patch_size"] = list(patch)
    if batch_text:
        if not batch_text.strip().isdigit() or int(batch_text) < 1:
            raise ConfigurationError(f"{BATCH_VARIABLE}={batch_text!r} is not a positive integer.")
        lines.append(f"batch_size {config['batch_size']} -> {int(batch_text)} (from {BATCH_VARIABLE})")
        config["batch_size"] = int(batch_text)
    return plans, lines


def limit_validation_cases(val_keys, environ: Optional[dict] = None) -> Tuple[list, List[str]]:
    """(the first ``nnFM_VAL_CASES`` of the sorted validation cases, log lines); all of them when unset."""
    environ = os.environ if environ is None else environ
    text = environ.get(VAL_CASES_VARIABLE)
    if not text:
        return list(val_keys), []
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigurationError(f"{VAL_CASES_VARIABLE}={text!r} is not a positive integer.")
    kept = sorted(val_keys)[:int(text)]
    return kept, [f"validation cases {len(val_keys)} -> {len(kept)} (from {VAL_CASES_VARIABLE})"]


def limit_trainer_validation_cases(trainer, val_keys) -> list:
    """``limit_validation_cases`` for a trainer's ``do_split``, its log lines in the trainer's log (nnFM's trainers
    and ``nnUNetTrainer_nnFMBudget`` share it)."""
    kept, lines = limit_validation_cases(val_keys)
    for line in lines:
        trainer.print_to_log_file(line)
    return kept
