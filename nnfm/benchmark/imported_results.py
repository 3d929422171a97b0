"""Run records read back from an earlier benchmark's results.csv (and its per-case Dice), so that runs made in
another session or on another machine are reported together with the runs under --output.

The CSV is the runner's own (``results.write_csv``); per-case Dice come from ``per_case_dice.csv`` beside it, or
from the file named like it with ``results`` replaced by ``per_case_dice`` (``x_results_DATE.csv`` ->
``x_per_case_dice_DATE.csv``), where there is one: without it the runs still enter the tables and the Dice
plots, not the per-class box plots.
"""
import csv
from pathlib import Path
from typing import Optional

from nnfm.benchmark.results import record_order, run_identity

# columns kept as text even where they look like numbers
TEXT_COLUMNS = {"dataset", "configuration", "profile", "patch_size", "trainer", "trainer_class", "plans", "weights",
                "weights_sha256", "shots", "device", "status", "mode", "finished_at", "output_folder"}
NOT_A_CLASS = {"mean"}


class NotResultsFile(ValueError):
    """An imported results file is not a benchmark results.csv."""


def records_from_csv(path: Path) -> list:
    """The run records of a results.csv, numbers typed, ``val_dice``/``test_dice`` per class, per-case Dice where
    the per-case file exists. Raises ``NotResultsFile`` (naming the file and the missing columns) for another CSV."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"dataset", "configuration", "profile", "trainer_class", "base_fold", "n_train", "seed",
                   "status"} - set(reader.fieldnames or [])
        if missing:
            raise NotResultsFile(f"{path} is not an nnFM_benchmark results.csv: no column {', '.join(sorted(missing))}."
                               " Pass the results.csv that nnFM_benchmark wrote into its --output folder.")
        rows = list(reader)
        fields = list(reader.fieldnames)
    classes = sorted({f.split("_dice_", 1)[1] for f in fields if f.startswith(("val_dice_", "test_dice_"))}
                     - NOT_A_CLASS)
    records = []
    for row in rows:
        record = {k: _value(k, v) for k, v in row.items()}
        for split in ("val", "test"):
            record[f"{split}_dice"] = {c: record.pop(f"{split}_dice_{c}", None) for c in classes}
        record.update(classes=classes, imported_from=str(path))
        records.append(record)
    per_case = _per_case_file(path)
    if per_case is not None:
        _attach_per_case(records, per_case)
    return records


def merge(local: list, imported: list) -> tuple:
    """(records, superseded): one record per run identity (dataset, configuration, profile, trainer, weights, base
    fold, labelled cases, seed). The first one wins, local runs before imported ones in the order given, except
    that a finished run replaces an unfinished one (a run another session did not finish, then did elsewhere)."""
    kept, superseded = {}, []
    for record in list(local) + list(imported):
        identity = run_identity(record)
        held = kept.get(identity)
        if held is None:
            kept[identity] = record
        elif held.get("status") != "done" and record.get("status") == "done":
            superseded.append(held)
            kept[identity] = record
        else:
            superseded.append(record)
    return sorted(kept.values(), key=record_order), superseded


def _value(column: str, text: str):
    if text == "":
        return None
    if column in TEXT_COLUMNS:
        return text
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _per_case_file(results: Path) -> Optional[Path]:
    for candidate in (results.with_name("per_case_dice.csv"),
                      results.with_name(results.name.replace("results", "per_case_dice"))):
        if candidate != results and candidate.is_file():
            return candidate
    return None


def _attach_per_case(records: list, path: Path) -> None:
    """Per-case Dice as the runner's records hold them: {split}_per_case = [{"case": ..., class: Dice}, ...]."""
    by_run = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["dataset"], row["configuration"], row["profile"], row["trainer_class"], int(row["fold"]))
            cases = by_run.setdefault(key, {}).setdefault(row["split"], {})
            cases.setdefault(row["case"], {"case": row["case"]})[row["class"]] = _value("dice", row["dice"])
    for record in records:
        key = (record["dataset"], record["configuration"], record["profile"], record["trainer_class"],
               record.get("fold"))
        for split, cases in by_run.get(key, {}).items():
            record[f"{split}_per_case"] = list(cases.values())
