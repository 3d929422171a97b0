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
# nnU-Net's own trainer (run as nnUNetTrainer_nnFMBudget under nnFM's budgets): what nnFM must beat (issue 27)
DEFAULT_REFERENCE = "nnUNetTrainer"


def collect_records(output: Path) -> list:
    """Every run record under the benchmark folder (all profiles), in a stable order."""
    records = [json.loads(p.read_text()) for p in sorted(Path(output).glob(f"*/Dataset*/*/fold_*/{RECORD}"))]
    return sorted(records, key=record_order)


def record_order(r: dict) -> tuple:
    return (r["dataset"], r["configuration"], r["profile"], r["trainer_class"], weights_key(r), r["base_fold"],
            r["n_train"], r["seed"] if r["seed"] is not None else -1)


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


def weights_key(record: dict) -> str:
    """The weights a run started from: their sha256, or 'random' (nnU-Net's trainers, -w random)."""
    if record.get("weights_sha256"):
        return record["weights_sha256"]
    return "random" if record.get("weights") in (None, "random") else str(record["weights"])


def run_label(record: dict) -> str:
    """The trainer as the tables and plots name it, with the weights' file stem where it loaded any
    ('nnFMTrainer [anatomix_mae_hippocampus]'), so runs of one trainer from other weights stay apart."""
    label = _trainer_label(record)
    weights = record.get("weights")
    if weights in (None, "random"):
        return label
    stem = Path(str(weights)).name
    for suffix in (".safetensors", ".pth", ".pt", ".ckpt"):
        stem = stem[:-len(suffix)] if stem.endswith(suffix) else stem
    return f"{label} [{stem}]"


def run_identity(record: dict) -> tuple:
    """What makes two records the same run: a rerun of it replaces it, a run differing in any part is another."""
    return tuple(record.get(k) for k in ("dataset", "configuration", "profile", "trainer_class")) + (
        weights_key(record),) + tuple(record.get(k) for k in ("base_fold", "n_train", "seed"))


def write_markdown(records: list, path: Path, reference: str = DEFAULT_REFERENCE) -> None:
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
             f"{first['iterations_per_epoch']})", run_label(first), str(first["n_train"]), str(len(group)),
             _mean_sd([r.get("val_dice_mean") for r in group])] +
            [_mean_sd([(r.get("val_dice") or {}).get(c) for r in group]) for c in classes] +
            [_mean_sd([r.get("test_dice_mean") for r in group]), _mean_sd([r.get("final_val_loss") for r in group]),
             _mean([r.get("s_per_iteration") for r in group], 3),
             _max([r.get("peak_rss_mb") for r in group]), _max([r.get("peak_gpu_mb") for r in group]),
             _mean([r.get("wall_s") for r in group], 0)]) + " |")
    lines += _per_draw_table(done, reference)
    lines += ["", "## Runs", ""]
    lines += _table_header(["dataset", "profile", "trainer (class run)", "base fold", "nnU-Net fold", "labelled cases",
                            "seed", "weights", "val Dice", "test Dice", "final val loss", "s/iteration", "status"])
    for r in records:
        lines.append("| " + " | ".join(str(v) for v in [
            r["dataset"], r["profile"], run_label(r), r["base_fold"], r["fold"], r["n_train"],
            "" if r["seed"] is None else r["seed"], Path(str(r.get("weights") or "")).name,
            _fmt(r.get("val_dice_mean"), 4), _fmt(r.get("test_dice_mean"), 4), _fmt(r.get("final_val_loss"), 4),
            _fmt(r.get("s_per_iteration"), 3), r["status"]]) + " |")
    Path(path).write_text("\n".join(lines) + "\n")


def _per_draw_table(done: list, reference: str) -> list:
    """Test Dice of every few-shot draw (seed) side by side, and each draw's difference to the reference trainer's
    run on the same draw: the paired comparison, which the spread across draws would otherwise hide."""
    drawn = [r for r in done if r.get("seed") is not None and r.get("test_dice_mean") is not None]
    if not drawn:
        return []
    references = {_draw(r): r["test_dice_mean"] for r in drawn if is_reference(r, reference)}
    lines = ["", "## Test Dice per few-shot draw", "",
             f"One run per draw (seed); − {reference}: the paired difference to its run on the same draw "
             "(same labelled cases, budget and sizing).", ""]
    lines += _table_header(["dataset", "profile", "trainer (class run)", "labelled cases", "seeds",
                            "test Dice per seed", "mean ± sd", f"− {reference}, per seed", "mean difference"])
    for _, group in _groups(drawn):
        group = sorted(group, key=lambda r: r["seed"])
        first = group[0]
        differences = [r["test_dice_mean"] - references[_draw(r)] if _draw(r) in references else None
                       for r in group]
        shown = not is_reference(first, reference) and any(d is not None for d in differences)
        lines.append("| " + " | ".join([
            first["dataset"], first["profile"], run_label(first), str(first["n_train"]),
            " / ".join(str(r["seed"]) for r in group),
            " / ".join(f"{r['test_dice_mean']:.3f}" for r in group),
            _mean_sd([r["test_dice_mean"] for r in group]),
            " / ".join("–" if d is None else f"{d:+.3f}" for d in differences) if shown else "",
            f"{statistics.mean(_numbers(differences)):+.3f}" if shown else ""]) + " |")
    return lines


def is_reference(record: dict, reference: str) -> bool:
    """``reference`` as the tables name a run ('nnFMTrainer [mae]'), or as it was asked for without weights
    ('nnUNetTrainer' for its run class nnUNetTrainer_nnFMBudget)."""
    return run_label(record) == reference or (record["trainer"] == reference and
                                              record.get("weights") in (None, "random"))


def _draw(record: dict) -> tuple:
    return tuple(record.get(k) for k in ("dataset", "configuration", "profile", "base_fold", "n_train", "seed"))


def _groups(records: list):
    groups = {}
    for r in records:
        key = tuple(r.get(k) for k in ("dataset", "configuration", "profile")) + (run_label(r), weights_key(r),
                                                                                 r.get("n_train"))
        groups.setdefault(key, []).append(r)
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
