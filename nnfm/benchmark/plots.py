"""Figures per dataset, configuration and profile: Dice vs labelled cases, and per-class Dice box plots; and per
dataset and configuration, where runs differ only in their number of iterations, Dice vs fine-tuning budget."""
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from nnfm.benchmark.results import per_case_dice, run_label  # noqa: E402

SPLITS = {"val": "validation", "test": "held-out test"}


def write_plots(records: list, folder: Path) -> list:
    """All figures for the finished runs; the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = [r for r in records if r.get("status") == "done"]
    written = []
    for (dataset, configuration, profile), group in _by_experiment(done).items():
        stem = f"{dataset}_{configuration}_{profile}"
        written.append(plot_dice_vs_labelled(group, folder / f"dice_vs_labelled_{stem}.png"))
        written.append(plot_per_class_boxes(group, folder / f"per_class_dice_{stem}.png"))
    for (dataset, configuration, sizing), group in _by_sizing(done).items():
        if len({_iterations(r) for r in group}) > 1:
            stem = f"{dataset}_{configuration}" + (f"_{sizing}" if sizing else "")
            written.append(plot_dice_vs_budget(group, folder / f"dice_vs_budget_{stem}.png"))
    return written


def plot_dice_vs_budget(records: list, path: Path) -> Path:
    """Mean +- sd Dice (held-out test set where there is one) vs training iterations (epochs x iterations per
    epoch), one panel per number of labelled cases, one line per trainer. Each budget is its own run with its own
    learning-rate schedule, not a checkpoint of a longer run."""
    split = "test" if any(r.get("test_dice_mean") is not None for r in records) else "val"
    sizes = sorted({r["n_train"] for r in records})
    colours = _colours(records)
    figure, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4.5), squeeze=False)
    for axis, n in zip(axes[0], sizes):
        for trainer, runs in _by_trainer([r for r in records if r["n_train"] == n]).items():
            budgets = sorted({_iterations(r) for r in runs})
            values = [[r[f"{split}_dice_mean"] for r in runs
                       if _iterations(r) == b and r.get(f"{split}_dice_mean") is not None] for b in budgets]
            kept = [(b, vs) for b, vs in zip(budgets, values) if vs]
            if kept:
                axis.errorbar([b for b, _ in kept], [statistics.mean(vs) for _, vs in kept],
                              yerr=[statistics.stdev(vs) if len(vs) > 1 else 0 for _, vs in kept],
                              marker="o", capsize=3, color=colours[trainer],
                              label=f"{trainer} ({'/'.join(str(len(vs)) for _, vs in kept)} runs)")
        axis.set_ylim(-0.02, 1.02)
        budgets = sorted({_iterations(r) for r in records})
        if len(budgets) > 1 and budgets[-1] >= 4 * budgets[0]:  # budgets grow by factors: equal steps on a log axis
            axis.set_xscale("log")
            axis.set_xticks(budgets, [str(b) for b in budgets])
            axis.minorticks_off()
        axis.set_xlabel("training iterations")
        axis.set_ylabel(f"mean foreground Dice ({SPLITS[split]})")
        axis.set_title(f"{n} labelled case{'s' if n != 1 else ''}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")  # inside the axes (outside it covered the y labels), over fewest points
    first = records[0]
    figure.suptitle(f"{first['dataset']} {first['configuration']}: Dice vs fine-tuning budget")
    figure.tight_layout()
    return _save(figure, path)


def _iterations(record: dict) -> int:
    return int(record["epochs"]) * int(record["iterations_per_epoch"])


def _by_sizing(records: list) -> dict:
    """Runs grouped by dataset, configuration and sizing (patch, batch, validation cases, test-time mirroring),
    so that a group differs only in its budget; the sizing is named as the profiles name it ('p32x48x32_b2')."""
    groups = {}
    for r in records:
        patch = r.get("patch_size")
        patch = "x".join(map(str, patch)) if isinstance(patch, (list, tuple)) else patch
        sizing = "_".join(part for part in (
            f"p{patch}" if patch else "", f"b{r['batch_size']}" if r.get("batch_size") else "",
            f"v{r['val_cases']}" if r.get("val_cases") else "",
            "notta" if r.get("test_tta") in (False, "False") else "") if part)
        groups.setdefault((r["dataset"], r["configuration"], sizing), []).append(r)
    return groups


def plot_dice_vs_labelled(records: list, path: Path) -> Path:
    splits = [s for s in SPLITS if any(r.get(f"{s}_dice_mean") is not None for r in records)] or ["val"]
    figure, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.5), squeeze=False)
    sizes = sorted({r["n_train"] for r in records})
    colours = _colours(records)
    for axis, split in zip(axes[0], splits):
        for trainer, runs in _by_trainer(records).items():
            points = sorted({r["n_train"] for r in runs})
            values = [[r.get(f"{split}_dice_mean") for r in runs if r["n_train"] == n] for n in points]
            values = [[v for v in vs if v is not None] for vs in values]
            kept = [(n, vs) for n, vs in zip(points, values) if vs]
            if not kept:
                continue
            axis.errorbar([n for n, _ in kept], [statistics.mean(vs) for _, vs in kept],
                          yerr=[statistics.stdev(vs) if len(vs) > 1 else 0 for _, vs in kept],
                          marker="o", capsize=3, color=colours[trainer], label=trainer)
        if sizes[0] > 0 and sizes[-1] / sizes[0] >= 4:
            axis.set_xscale("log")  # few-shot sizes span orders of magnitude
        axis.set_xticks(sizes)
        axis.set_xticklabels([str(n) for n in sizes])
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("labelled training cases")
        axis.set_ylabel(f"mean foreground Dice ({SPLITS[split]})")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")  # where it covers fewest points: low-Dice runs sit anywhere
    first = records[0]
    figure.suptitle(f"{first['dataset']} {first['configuration']}, profile {first['profile']} "
                    f"({first['epochs']} x {first['iterations_per_epoch']})")
    return _save(figure, path)


def plot_per_class_boxes(records: list, path: Path) -> Path:
    """Per-case Dice of each class, one box per trainer and number of labelled cases."""
    cases = {}
    for record, split, _, name, dice in per_case_dice(records):
        if dice is not None:
            cases.setdefault((split, name), {}).setdefault((_trainer(record), record["n_train"]), []).append(dice)
    splits = [s for s in SPLITS if any(k[0] == s for k in cases)] or ["val"]
    classes = sorted({name for record in records for name in record.get("classes", [])})
    boxes = sorted({box for per_box in cases.values() for box in per_box}, key=lambda b: (b[0], b[1]))
    colours = _colours(records)
    figure, axes = plt.subplots(len(splits), max(1, len(classes)),
                                figsize=(max(5, 0.9 * len(boxes) + 2) * max(1, len(classes)), 4.5 * len(splits)),
                                squeeze=False)
    for row, split in zip(axes, splits):
        for axis, name in zip(row, classes):
            per_box = cases.get((split, name), {})
            shown = [b for b in boxes if per_box.get(b)]
            if shown:
                parts = axis.boxplot([per_box[b] for b in shown], patch_artist=True)
                for patch, box in zip(parts["boxes"], shown):
                    patch.set_facecolor(colours[box[0]])
                    patch.set_alpha(0.5)
                axis.set_xticks(range(1, len(shown) + 1))
                axis.set_xticklabels([f"{b[0]}\nN={b[1]}" for b in shown], rotation=30, ha="right", fontsize=7)
            axis.set_ylim(-0.02, 1.02)
            axis.set_title(f"{name} ({SPLITS[split]})")
            axis.set_ylabel("Dice per case")
            axis.grid(alpha=0.3, axis="y")
    return _save(figure, path)


def _by_experiment(records: list) -> dict:
    groups = {}
    for r in records:
        groups.setdefault((r["dataset"], r["configuration"], r["profile"]), []).append(r)
    return groups


def _by_trainer(records: list) -> dict:
    groups = {}
    for r in records:
        groups.setdefault(_trainer(r), []).append(r)
    return dict(sorted(groups.items()))


def _colours(records: list) -> dict:
    """One colour per trainer for the whole figure, so that a line keeps its colour in every panel."""
    return {t: f"C{i % 10}" for i, t in enumerate(sorted({_trainer(r) for r in records}))}


def _trainer(record: dict) -> str:
    return run_label(record)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
