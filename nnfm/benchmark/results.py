"""Benchmark tables from the run records: results.csv (one row per run), per_case_dice.csv, results.md."""
import csv
import json
import statistics
from pathlib import Path

from nnfm.benchmark.runs import RECORD

LEADING = ["dataset", "configuration", "profile", "epochs", "iterations_per_epoch", "val_iterations_per_epoch", "patch_size",
           "batch_size", "val_cases", "test_tta",
           "trainer", "trainer_class", "plans", "weights", "weights_sha256", "base_fold", "fold", "shots", "n_train",
           "n_val", "seed", "device", "status", "mode"]
TRAILING = ["final_train_loss", "final_val_loss", "wall_s", "epochs_run", "epochs_time_s", "s_per_iteration",
            "peak_rss_mb", "peak_gpu_mb", "predict_s", "finished_at", "output_folder"]
GROUP = ("dataset", "configuration", "profile", "trainer_class", "n_train")


def collect_records(output: Path) -> list:
    """Every run record under the benchmark folder (all profiles), in a stable order."""
    records = [json.loads(p.read_text()) for p in sorted(Path(output).glob(f"*/Dataset*/*/fold_*/{RECORD}"))]
    return sorted(records, key=lambda r: (r["dataset"], r["configuration"], r["profile"], r["trainer_class"],
                                          r["base_fold"], r["n_train"], r["seed"] if r["seed"] is not None else -1))


def class_columns(records: list) -> list:
    return sorted({c for r in records for c in r.get("classes", [])})


def rows(records: list) -> list:
    """Flat rows: per-class Dice as val_dice_<class> / test_dice_<class> columns."""
    classes = class_columns(records)
    flat = []
    for r in records:
        row = {k: r.get(k) for k in LEADING}
        for split in ("val", "test"):
            row[f"{split}_dice_mean"] = r.get(f"{split}_dice_mean")
            row.update({f"{split}_dice_{c}": (r.get(f"{split}_dice") or {}).get(c) for c in classes})
        row["test_n"] = r.get("test_n")
        row.update({k: r.get(k) for k in TRAILING})
        flat.append(row)
    return flat


def write_csv(records: list, path: Path) -> None:
    table = rows(records)
    if not table:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in table)


def write_per_case_csv(records: list, path: Path) -> None:
    fields = ["dataset", "configuration", "profile", "trainer_class", "base_fold", "fold", "n_train", "seed", "split",
              "case", "class", "dice"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for record, split, case, name, dice in per_case_dice(records):
            writer.writerow(dict({k: _csv_value(record.get(k)) for k in fields[:8]}, split=split, case=case,
                                 **{"class": name, "dice": _csv_value(dice)}))


def per_case_dice(records: list):
    """(record, 'val' or 'test', case, class, Dice) for every evaluated case of every finished run."""
    for record in records:
        if record.get("status") != "done":
            continue
        for split in ("val", "test"):
            for case in record.get(f"{split}_per_case") or []:
                for name in record.get("classes", []):
                    yield record, split, case["case"], name, case.get(name)


def write_markdown(records: list, path: Path) -> None:
    done = [r for r in records if r.get("status") == "done"]
    classes = class_columns(done)
    lines = ["# nnFM benchmark results", "",
             "Mean ± standard deviation over folds and few-shot draws; Dice from nnU-Net's evaluation "
             "(validation: the base fold's validation cases; test: held-out cases). s/iteration: median epoch "
             "time / training iterations per epoch (an epoch includes its validation iterations). Peak RSS: the "
             "training process, data-augmentation workers excluded. Final val loss: nnU-Net's validation loss (CE + "
             "soft Dice, lower is better) of the last epoch, which still orders runs whose Dice is 0.", ""]
    header = ["dataset", "configuration", "profile (epochs x iterations)", "trainer (class run)", "labelled cases",
              "runs", "val Dice"] + [f"val {c}" for c in classes] + \
        ["test Dice", "final val loss", "s/iteration", "peak RSS MB", "peak GPU MB", "wall s"]
    lines += _table_header(header)
    for key, group in _groups(done):
        first = group[0]
        lines.append("| " + " | ".join(
            [first["dataset"], first["configuration"], f"{first['profile']} ({first['epochs']}x"
             f"{first['iterations_per_epoch']})", _trainer_label(first), str(first["n_train"]), str(len(group)),
             _mean_sd([r.get("val_dice_mean") for r in group])] +
            [_mean_sd([(r.get("val_dice") or {}).get(c) for r in group]) for c in classes] +
            [_mean_sd([r.get("test_dice_mean") for r in group]), _mean_sd([r.get("final_val_loss") for r in group]),
             _mean([r.get("s_per_iteration") for r in group], 3),
             _max([r.get("peak_rss_mb") for r in group]), _max([r.get("peak_gpu_mb") for r in group]),
             _mean([r.get("wall_s") for r in group], 0)]) + " |")
    lines += ["", "## Runs", ""]
    lines += _table_header(["dataset", "profile", "trainer (class run)", "base fold", "nnU-Net fold", "labelled cases",
                            "seed", "weights", "val Dice", "test Dice", "final val loss", "s/iteration", "status"])
    for r in records:
        lines.append("| " + " | ".join(str(v) for v in [
            r["dataset"], r["profile"], _trainer_label(r), r["base_fold"], r["fold"], r["n_train"],
            "" if r["seed"] is None else r["seed"], Path(str(r.get("weights") or "")).name,
            _fmt(r.get("val_dice_mean"), 4), _fmt(r.get("test_dice_mean"), 4), _fmt(r.get("final_val_loss"), 4),
            _fmt(r.get("s_per_iteration"), 3), r["status"]]) + " |")
    Path(path).write_text("\n".join(lines) + "\n")


def _groups(records: list):
    groups = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in GROUP), []).append(r)
    return groups.items()


def _trainer_label(record: dict) -> str:
    run, asked = record["trainer_class"], record["trainer"]
    return run if run == asked else f"{asked} ({run})"


def _table_header(header: list) -> list:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]


def _numbers(values) -> list:
    return [v for v in values if v is not None]


def _mean_sd(values) -> str:
    values = _numbers(values)
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _mean(values, digits: int) -> str:
    values = _numbers(values)
    return _fmt(statistics.mean(values), digits) if values else ""


def _max(values) -> str:
    values = _numbers(values)
    return f"{max(values):.0f}" if values else ""


def _fmt(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _csv_value(value):
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value
