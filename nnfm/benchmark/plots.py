"""Figures per dataset, configuration and profile: Dice vs labelled cases, and per-class Dice box plots."""
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from nnfm.benchmark.results import per_case_dice  # noqa: E402

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
    return written


def plot_dice_vs_labelled(records: list, path: Path) -> Path:
    splits = [s for s in SPLITS if any(r.get(f"{s}_dice_mean") is not None for r in records)] or ["val"]
    figure, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.5), squeeze=False)
    sizes = sorted({r["n_train"] for r in records})
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
                          marker="o", capsize=3, label=trainer)
        if sizes[0] > 0 and sizes[-1] / sizes[0] >= 4:
            axis.set_xscale("log")  # few-shot sizes span orders of magnitude
        axis.set_xticks(sizes)
        axis.set_xticklabels([str(n) for n in sizes])
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("labelled training cases")
        axis.set_ylabel(f"mean foreground Dice ({SPLITS[split]})")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
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
    colours = {t: f"C{i}" for i, t in enumerate(sorted({b[0] for b in boxes}))}
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


def _trainer(record: dict) -> str:
    return record["trainer_class"]


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
