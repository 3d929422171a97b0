"""Test Dice under intensity shifts the training never saw: models that nnFM_benchmark trained, predicted again on
changed copies of the same test images (issue 28's domain-shift check; DropGen claims its gain there).

    python benchmarks/domain_shift.py BENCH_OUT/PROFILE [MORE_OUT/PROFILE] --work SHIFT_WORK --images WORK/nnUNet_raw/Dataset904_Hippocampus/imagesTs \\
        --labels WORK/nnUNet_raw/Dataset904_Hippocampus/labelsTs --shifts none invert gamma0.5 gamma2 \\
        --trainers nnUNetTrainer_nnFMBudget nnFMTrainer_nnUNetPlans --folds 5 6 7 --out shift.csv

BENCH_OUT/PROFILE is nnFM_benchmark's output for one budget (several: their trainers are looked up in all) (``-o BENCH_OUT``; nnU-Net's results layout: every
trained fold keeps ``checkpoint_final.pth``). Shifts act on each raw image before nnU-Net's own normalisation,
between the image's minimum and maximum (MRI: no fixed scale), so nnU-Net's z-scoring cannot undo them:

- ``none``: the images as they are (the benchmark's own test Dice, recomputed: a check of the pipeline);
- ``invert``: ``min + max - x`` (inverted contrast: grey matter brighter than white, fluid dark);
- ``gammaG``: ``min + (max - min) * ((x - min) / (max - min)) ** G`` (a strong non-linear contrast change).

Each (shift, trainer, fold) is predicted with ``nnUNetv2_predict`` on the benchmark's results tree (sequential, no
test-time mirroring, as the benchmark's ``--disable-tta``) and scored with ``nnUNetv2_evaluate_folder``; finished ones are skipped, so the
script resumes after a kill. Prints a table of mean +- sd over folds and the paired difference to the first trainer.

    python benchmarks/domain_shift.py --from-csv shift.csv --trainers REFERENCE OTHER ... --figure shift.png

prints the same table from a CSV this script wrote (no prediction) and, with ``--figure``, draws it: one panel per
shift, one bar per trainer (mean over folds) with each fold's Dice as a dot.
"""
import argparse
import csv
import os
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnfm.benchmark.commands import nnunet_environment, run_command
from nnfm.benchmark.nnunet_outputs import read_dice
from nnfm.paths import console_script

SHIFT = re.compile(r"^(none|invert|gamma(\d+(\.\d+)?))$")


def shift_array(x: np.ndarray, shift: str) -> np.ndarray:
    """``x`` (any shape, float) changed by ``shift`` between its own minimum and maximum; ValueError if unknown."""
    match = SHIFT.match(shift)
    if not match:
        raise ValueError(f"unknown shift {shift!r}: use none, invert or gammaG (e.g. gamma0.5, gamma2)")
    if shift == "none":
        return x
    lo, hi = float(x.min()), float(x.max())
    if shift == "invert":
        return lo + hi - x
    unit = (x - lo) / max(hi - lo, 1e-12)
    return lo + (hi - lo) * unit ** float(match.group(2))


def shifted_images(images: Path, shift: str, out: Path) -> Path:
    """A copy of the folder ``images`` with every image shifted (geometry kept); written once."""
    folder = out / "images" / shift
    done = folder / ".complete"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for file in sorted(images.iterdir()):
        if not file.name.endswith((".nii.gz", ".nii", ".mha", ".nrrd")):
            continue
        image = sitk.ReadImage(str(file))
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        shifted = sitk.GetImageFromArray(shift_array(array, shift))
        shifted.CopyInformation(image)
        sitk.WriteImage(shifted, str(folder / file.name))
    done.write_text("")
    return folder


def model_folders(profile_folders: list, trainers: list) -> dict:
    """{trainer class: model folder} under nnFM_benchmark's outputs for one budget (nnU-Net's results layout)."""
    found = {}
    for trainer in trainers:
        matches = sorted(m for folder in profile_folders for m in folder.glob(f"Dataset*/{trainer}__*__*"))
        if len(matches) != 1:
            raise SystemExit(f"{trainer}: expected one model folder under {profile_folders}/Dataset*/, found "
                             f"{[str(m) for m in matches] or 'none'}; pass the profile folder nnFM_benchmark wrote "
                             f"(-o OUT gives OUT/PROFILE/Dataset.../TRAINER__PLANS__CONFIGURATION)")
        found[trainer] = matches[0]
    return found


def evaluate(model: Path, fold: int, images: Path, labels: Path, shift: str, out: Path, env: dict) -> dict:
    predictions = out / "predictions" / shift / model.name / f"fold_{fold}"
    summary = predictions / "summary.json"
    log = out / "logs" / f"{shift}__{model.name}__fold_{fold}.log"
    if not summary.is_file():
        # nnUNetv2_predict (sequential with -npp 0 -nps 0, as the benchmark predicts) on the benchmark's results tree
        trainer, plans, configuration = model.name.split("__")
        run_command([console_script("nnUNetv2_predict"), "-i", images, "-o", predictions, "-d", model.parent.name,
                     "-tr", trainer, "-p", plans, "-c", configuration, "-f", fold, "-device", "cpu", "-npp", "0",
                     "-nps", "0", "--disable_tta", "--disable_progress_bar"],
                    dict(env, nnUNet_results=str(model.parent.parent)), log)
        run_command([console_script("nnUNetv2_evaluate_folder"), labels, predictions, "-djfile",
                     predictions / "dataset.json", "-pfile", predictions / "plans.json", "-np", "1"], env, log)
    import json
    dataset_json = json.loads((predictions / "dataset.json").read_text())
    return read_dice(summary, dataset_json)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile_folders", type=Path, nargs="*", help="nnFM_benchmark's OUT/PROFILE folder(s)")
    parser.add_argument("--images", type=Path)
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--trainers", nargs="+", required=True, help="trainer classes; the first is the reference")
    parser.add_argument("--folds", nargs="+", type=int)
    parser.add_argument("--from-csv", type=Path, default=None,
                        help="report a CSV this script wrote (table, --figure) without predicting anything")
    parser.add_argument("--figure", type=Path, default=None, help="PNG of the table (one panel per shift)")
    parser.add_argument("--shifts", nargs="+", default=["none", "invert", "gamma0.5", "gamma2"])
    parser.add_argument("--work", type=Path, help="where shifted images and predictions go")
    parser.add_argument("--out", type=Path, default=None, help="CSV of every (shift, trainer, fold)")
    args = parser.parse_args(argv)
    if args.from_csv is not None:
        rows = read_rows(args.from_csv)
        print_table(rows, args.trainers)
        if args.figure:
            plot_shifts(rows, args.trainers, args.figure)
        return
    missing = [f for f in ("profile_folders", "images", "labels", "folds", "work") if not getattr(args, f)]
    if missing:
        parser.error(f"predicting needs {', '.join('--' + m if m != 'profile_folders' else m for m in missing)} "
                     f"(or --from-csv to report a CSV)")
    for shift in args.shifts:
        shift_array(np.zeros(2, np.float32), shift)  # refuse an unknown shift before any work
    work = args.work
    models = model_folders(args.profile_folders, args.trainers)
    env = nnunet_environment(dict(os.environ))
    rows = []
    for shift in args.shifts:
        images = shifted_images(args.images, shift, work)
        for trainer, model in models.items():
            for fold in args.folds:
                if not (model / f"fold_{fold}" / "checkpoint_final.pth").is_file():
                    print(f"skip {trainer} fold {fold}: not trained", flush=True)
                    continue
                dice = evaluate(model, fold, images, args.labels, shift, work, env)
                rows.append({"shift": shift, "trainer": trainer, "fold": fold, "test_n": dice["n"],
                             "test_dice_mean": dice["dice_mean"], **{f"test_dice_{k}": v
                                                                     for k, v in dice["dice"].items()}})
                print(f"{shift:>9} {trainer:<34} fold {fold}: {dice['dice_mean']:.3f}", flush=True)
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print_table(rows, args.trainers)
    if args.figure:
        plot_shifts(rows, args.trainers, args.figure)


def read_rows(path: Path) -> list:
    """The rows of a CSV this script wrote, with fold as int and Dice as float."""
    with open(path, newline="") as f:
        return [dict(r, fold=int(r["fold"]), test_dice_mean=float(r["test_dice_mean"])) for r in csv.DictReader(f)]


def table_lines(rows: list, trainers: list) -> list:
    """Markdown: per shift and trainer, Dice per fold, mean +- sd, mean paired difference to ``trainers[0]``."""
    dice = {(r["shift"], r["trainer"], r["fold"]): r["test_dice_mean"] for r in rows}
    reference = trainers[0]
    lines = [f"| shift | trainer | test Dice per fold | mean +- sd | − {reference} (paired) |", "|---|---|---|---|---|"]
    for shift in dict.fromkeys(r["shift"] for r in rows):
        for trainer in trainers:
            folds = sorted(f for s, t, f in dice if s == shift and t == trainer)
            values = [dice[(shift, trainer, f)] for f in folds]
            if not values:
                continue
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            paired = [dice[(shift, trainer, f)] - dice[(shift, reference, f)] for f in folds
                      if (shift, reference, f) in dice]
            diff = "" if trainer == reference or not paired else f"{statistics.mean(paired):+.3f}"
            lines.append(f"| {shift} | {trainer} | {' / '.join(f'{v:.3f}' for v in values)} | "
                         f"{statistics.mean(values):.3f} +- {sd:.3f} | {diff} |")
    return lines


def print_table(rows: list, trainers: list) -> None:
    print("\n" + "\n".join(table_lines(rows, trainers)))


def plot_shifts(rows: list, trainers: list, path: Path) -> Path:
    """One panel per shift: a bar per trainer (mean test Dice over folds), each fold's Dice as a dot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shifts = list(dict.fromkeys(r["shift"] for r in rows))
    fig, axes = plt.subplots(1, len(shifts), figsize=(3.2 * len(shifts), 3.6), sharey=True, squeeze=False)
    for ax, shift in zip(axes[0], shifts):
        for i, trainer in enumerate(trainers):
            values = [r["test_dice_mean"] for r in rows if r["shift"] == shift and r["trainer"] == trainer]
            if not values:
                continue
            ax.bar(i, statistics.mean(values), color=f"C{i}", alpha=0.6, label=trainer)
            ax.scatter([i] * len(values), values, color="k", s=10, zorder=3)
        ax.set_title(f"test images: {shift}")
        ax.set_xticks([])
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("test Dice (mean of classes)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
