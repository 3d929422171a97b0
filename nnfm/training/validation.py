"""Validate a fold that has no ``checkpoint_final.pth`` (a budgeted or interrupted run), and say which checkpoint
every validation used.

nnU-Net 2.8.1's ``nnUNetv2_train ... --val`` refuses a fold without ``checkpoint_final.pth`` ("Cannot run validation
because the training is not finished yet!"), ``--val_best`` included: ``maybe_load_checkpoint`` checks for the final
checkpoint before ``--val_best`` loads ``checkpoint_best.pth`` (nnunetv2/run/run_training.py), and no trainer method
runs between the trainer's ``__init__`` and that check. nnU-Net PR #3057 (MIC-DKFZ/nnUNet) asks for the same. So:

- ``nnFM_validate D C F -tr T -p P`` builds the trainer as ``nnUNetv2_train`` does (``get_trainer_from_args``), loads
  ``checkpoint_final.pth`` or, where there is none, ``checkpoint_best.pth`` (``--checkpoint`` picks one), and runs
  nnU-Net's own ``perform_actual_validation``; any nnU-Net trainer works;
- nnFM's trainers refuse ``--val`` on such a fold already in ``__init__``, naming the checkpoints there and the
  ``nnFM_validate`` command (instead of nnU-Net's RuntimeError after the trainer is built);
- every validation (nnU-Net's after training, ``--val``, ``--val_best``, ``nnFM_validate``) writes the checkpoint it
  used into the training log and into ``validation/summary.json`` under ``nnfm_validated_checkpoint``.
"""
import argparse
import datetime
import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from nnfm.errors import MissingCheckpointError, NNFMError

FINAL, BEST, LATEST = "checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth"
SUMMARY_KEY = "nnfm_validated_checkpoint"
# True while nnFM_validate builds the trainer: the fold guard (nnfm/training/fold_guard.py validation_only) then lets
# a finished fold be validated again instead of refusing it as a second training
VALIDATING = False
CHOICES = {"final": FINAL, "best": BEST, "latest": LATEST}


def checkpoint_record(path: Path, note: str = "") -> dict:
    """What a checkpoint is: file, epochs trained, nnU-Net's best EMA pseudo Dice, time written. The epoch needs the
    file's small entries only (``mmap``: the weights are not read); unreadable ones are left out."""
    record = {"checkpoint": path.name, "path": str(path)}
    try:
        record["written"] = datetime.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
        import torch

        # nnU-Net's own checkpoint of this fold, loaded as nnU-Net loads it (weights_only=False: it holds numpy values)
        saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        record["epochs_trained"] = int(saved["current_epoch"])  # save_checkpoint stores current_epoch + 1
        if saved.get("_best_ema") is not None:
            record["best_ema_pseudo_dice"] = round(float(saved["_best_ema"]), 4)
    except Exception:  # a message about a checkpoint must not fail on the checkpoint
        pass
    if note:
        record["note"] = note
    return record


def describe(record: dict) -> str:
    parts = [f"epoch {record['epochs_trained']}"] if "epochs_trained" in record else []
    if "best_ema_pseudo_dice" in record:
        parts.append(f"best EMA pseudo Dice {record['best_ema_pseudo_dice']:.4f}")
    if "written" in record:
        parts.append(f"written {record['written'].replace('T', ' ')}")
    return f"{record['checkpoint']} ({', '.join(parts)})" if parts else record["checkpoint"]


def choose_checkpoint(folder: Path, wanted: str = "auto") -> Path:
    """``wanted`` auto: checkpoint_final.pth, else checkpoint_best.pth; final / best / latest: that file. Raises
    MissingCheckpointError naming what the folder holds."""
    folder = Path(folder)
    names = [FINAL, BEST] if wanted == "auto" else [CHOICES[wanted]]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    held = [describe(checkpoint_record(folder / n)) for n in (FINAL, BEST, LATEST) if (folder / n).is_file()]
    others = [k for k, n in CHOICES.items() if (folder / n).is_file()]
    raise MissingCheckpointError(
        f"{folder} has no {' or '.join(names)}"
        + (f"; it holds {', '.join(held)}. Fix: --checkpoint {others[0]}." if held else
           ": nothing of this fold was trained (or nnUNet_results points elsewhere). Fix: train it with "
           "nnUNetv2_train, or check the dataset, trainer (-tr), plans (-p), configuration and fold."))


def validate_command(dataset, configuration: str, fold, trainer: str, plans: str, device: Optional[str] = None,
                     npz: bool = False, checkpoint: Optional[str] = None) -> str:
    words = ["nnFM_validate", str(dataset), configuration, str(fold), "-tr", trainer, "-p", plans]
    words += ["-device", device] if device else []
    words += ["--npz"] if npz else []
    words += ["--checkpoint", checkpoint] if checkpoint else []
    return " ".join(shlex.quote(w) for w in words)


def _argv_value(argv: Sequence[str], flag: str) -> Optional[str]:
    for i, word in enumerate(argv):
        if word == flag and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def refuse_validation_without_final(folder, trainer: str, plans: dict, configuration: str, fold,
                                    argv: Optional[Sequence[str]] = None) -> None:
    """For ``nnUNetv2_train ... --val`` (in the trainer's ``__init__``): raise MissingCheckpointError when the fold has
    no checkpoint_final.pth, before nnU-Net's RuntimeError, with the checkpoints there and the command that works."""
    argv = list(sys.argv if argv is None else argv)
    folder = Path(folder)
    if "--val" not in argv[1:] or (folder / FINAL).is_file():
        return
    dataset = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else plans.get("dataset_name")
    device = _argv_value(argv, "-device")
    words = ["nnUNetv2_train", str(dataset), configuration, str(fold), "-tr", trainer, "-p", plans["plans_name"]]
    words += ["-device", device] if device else []
    train = " ".join(shlex.quote(w) for w in words)
    held = [describe(checkpoint_record(folder / n)) for n in (BEST, LATEST) if (folder / n).is_file()]
    if not held:
        raise MissingCheckpointError(
            f"{folder} holds no checkpoint: this fold was not trained (or not for an epoch). nnU-Net's --val "
            f"validates a finished training. Fix: train it:\n    $ {train}")
    command = validate_command(dataset, configuration, fold, trainer, plans["plans_name"], device, "--npz" in argv,
                               None if (folder / BEST).is_file() else "latest")
    raise MissingCheckpointError(
        f"{folder} has no {FINAL}: its training stopped before the last epoch (a budget, or an interrupted run), and "
        f"nnU-Net's --val validates only a finished training (--val_best too: nnunetv2/run/run_training.py checks for "
        f"{FINAL} first). It holds {', '.join(held)}. Fix: validate {BEST if (folder / BEST).is_file() else LATEST} "
        f"(the log and validation/summary.json say which checkpoint was validated):\n    $ {command}\n"
        f"  or finish the training first (nnU-Net's --c continues from {LATEST}), then --val:\n    $ {train} --c")


class RecordsValidatedCheckpoint:
    """Mixin for an nnU-Net trainer (before nnUNetTrainer in the bases): remembers the checkpoint whose weights the
    network holds, and writes it into the log before the validation and into validation/summary.json after it."""
    _validated: Optional[dict] = None

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        if isinstance(filename_or_checkpoint, (str, os.PathLike)):
            self._validated = checkpoint_record(Path(filename_or_checkpoint))
        else:
            self._validated = {"checkpoint": "a checkpoint given in memory", "epochs_trained": self.current_epoch}

    def run_training(self):
        super().run_training()
        final = Path(self.output_folder) / FINAL
        self._validated = dict(checkpoint_record(final) if final.is_file() else {"checkpoint": "none saved"},
                               note=f"the weights at the end of this training ({self.current_epoch} epochs)")

    def perform_actual_validation(self, save_probabilities: bool = False):
        record = self._validated or {"checkpoint": "unknown (no checkpoint was loaded in this process)"}
        if self.local_rank == 0:
            self.print_to_log_file(f"nnFM: validating the weights of {describe(record)}"
                                   + (f": {record['note']}" if record.get("note") else ""),
                                   also_print_to_console=True)
        super().perform_actual_validation(save_probabilities)
        if self.local_rank == 0:
            mark_summary(Path(self.output_folder), record)


def mark_summary(folder: Path, record: dict) -> Optional[Path]:
    """Add ``record`` to the fold's validation/summary.json (nnU-Net's keys untouched; nnU-Net's readers,
    load_summary_json and find_best_configuration, read only theirs)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

    summary = Path(folder) / "validation" / "summary.json"
    if not summary.is_file():
        return None
    content = load_json(str(summary))
    content[SUMMARY_KEY] = {k: v for k, v in record.items() if k != "path"}
    save_json(content, str(summary), sort_keys=True)  # as nnU-Net's save_summary_json writes it
    return summary


def validate(dataset, configuration: str, fold, trainer: str = "nnUNetTrainer", plans: str = "nnUNetPlans",
             checkpoint: str = "auto", npz: bool = False, device: str = "cuda") -> Path:
    """nnU-Net's validation of one fold from the checkpoint ``choose_checkpoint`` picks; returns summary.json."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    global VALIDATING
    fold = fold if fold == "all" else int(fold)
    VALIDATING = True
    try:
        nnunet_trainer = get_trainer_from_args(str(dataset), configuration, fold, trainer, plans,
                                               device=torch.device(device))
    finally:
        VALIDATING = False
    folder = Path(nnunet_trainer.output_folder)
    path = choose_checkpoint(folder, checkpoint)
    note = "" if path.name == FINAL else (
        f"{'no ' + FINAL + ' in this fold; ' if not (folder / FINAL).is_file() else ''}chosen by nnFM_validate. "
        f"nnUNetv2_predict uses {FINAL} unless told: add -chk {path.name}")
    nnunet_trainer.load_checkpoint(str(path))
    record = dict(checkpoint_record(path), **({"note": note} if note else {}))
    if isinstance(nnunet_trainer, RecordsValidatedCheckpoint):
        nnunet_trainer._validated = record  # its perform_actual_validation logs it and marks the summary
        nnunet_trainer.perform_actual_validation(npz)
    else:  # any other nnU-Net trainer: the same two records from here
        nnunet_trainer.print_to_log_file(f"nnFM: validating the weights of {describe(record)}"
                                         + (f": {note}" if note else ""), also_print_to_console=True)
        nnunet_trainer.perform_actual_validation(npz)
        mark_summary(folder, record)
    return folder / "validation" / "summary.json"


def main(argv: Optional[List[str]] = None) -> None:
    from nnfm.flags import parse_args

    parser = argparse.ArgumentParser(
        description="nnU-Net's validation of one trained fold from checkpoint_final.pth or, where a budgeted or "
                    "interrupted run has none, checkpoint_best.pth (nnUNetv2_train --val needs checkpoint_final.pth). "
                    "The log and validation/summary.json ('nnfm_validated_checkpoint') say which was validated.")
    parser.add_argument("dataset_name_or_id")
    parser.add_argument("configuration")
    parser.add_argument("fold")
    parser.add_argument("-tr", default="nnUNetTrainer", help="trainer class, as for nnUNetv2_train (e.g. nnFMTrainer)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier, as for nnUNetv2_train (e.g. "
                                                          "nnFMPlans_anatomix)")
    parser.add_argument("--checkpoint", choices=["auto", *CHOICES], default="auto",
                        help="auto (default): checkpoint_final.pth, else checkpoint_best.pth")
    parser.add_argument("--npz", action="store_true", help="also save the softmax outputs (as nnUNetv2_train --npz)")
    parser.add_argument("-device", default="cuda", help="cuda, cpu or mps (as nnUNetv2_train)")
    args = parse_args(parser, argv)
    try:
        summary = validate(args.dataset_name_or_id, args.configuration, args.fold, args.tr, args.p, args.checkpoint,
                           args.npz, args.device)
    except NNFMError as error:
        raise SystemExit(f"nnFM_validate: {type(error).__name__}: {error}") from None
    print(f"nnFM_validate: {summary}")


if __name__ == "__main__":
    main()
