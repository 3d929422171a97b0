"""Reading what nnU-Net and nnFM wrote: Dice from summary.json, epoch times from the checkpoint, weights used."""
import json
import math
import statistics
from pathlib import Path
from typing import Optional


def class_names(dataset_json: dict) -> dict:
    """summary.json key ('1', or '(1, 2)' for a region) -> class name from dataset.json."""
    names = {}
    for name, value in dataset_json["labels"].items():
        values = value if isinstance(value, (list, tuple)) else [value]
        keys = [str(values[0])] if len(values) == 1 else []
        names.update({key: name for key in keys + [str(tuple(values))]})
    return names


def read_dice(summary_file: Path, dataset_json: dict) -> dict:
    """Mean and per-case Dice per foreground class, as nnU-Net's evaluation computed them."""
    summary = json.loads(Path(summary_file).read_text())
    names = class_names(dataset_json)
    ending = dataset_json.get("file_ending", ".nii.gz")
    per_case = []
    for case in summary["metric_per_case"]:
        file = Path(case["reference_file"]).name
        row = {"case": file[:-len(ending)] if file.endswith(ending) else file}
        row.update({names.get(k, k): _number(m["Dice"]) for k, m in case["metrics"].items()})
        per_case.append(row)
    return {"dice": {names.get(k, k): _number(m["Dice"]) for k, m in summary["mean"].items()},
            "dice_mean": _number(summary["foreground_mean"]["Dice"]), "per_case": per_case, "n": len(per_case)}


def training_log(checkpoint_file: Path) -> dict:
    """nnU-Net's logger, kept in every checkpoint (all epochs, across resumptions)."""
    import torch

    return torch.load(checkpoint_file, map_location="cpu", weights_only=False)["logging"]


def epoch_durations(logging: dict) -> list:
    """Seconds per epoch."""
    return [end - start for start, end in zip(logging["epoch_start_timestamps"], logging["epoch_end_timestamps"])]


def final_losses(logging: dict) -> dict:
    """Last epoch's training and validation loss (nnU-Net's CE + soft-Dice loss, lower is better).

    A continuous measure that still separates short runs whose thresholded Dice is 0 for all of them.
    """
    return {"final_train_loss": _number(logging["train_losses"][-1]) if logging.get("train_losses") else None,
            "final_val_loss": _number(logging["val_losses"][-1]) if logging.get("val_losses") else None}


def seconds_per_iteration(durations: list, iterations_per_epoch: int) -> Optional[float]:
    # the median ignores the slow first epoch (workers starting); an epoch includes its validation iterations
    return statistics.median(durations) / iterations_per_epoch if durations else None


def pretrained_provenance(fold_folder: Path) -> dict:
    """Which weights an nnFM trainer loaded (nnfm_pretrained.json); empty for nnU-Net's own trainers."""
    path = Path(fold_folder) / "nnfm_pretrained.json"
    if not path.is_file():
        return {}
    provenance = json.loads(path.read_text())
    return {"weights": provenance.get("weights") or "random", "weights_sha256": provenance.get("sha256")}


def _number(value) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
