"""A PNG of predicted vs reference segmentations of held-back cases, from ``nnUNetv2_evaluate_folder``'s summary.

    python -m nnfm.segmentation_figure SUMMARY_JSON IMAGES_DIR OUT.png [--labels DATASET_JSON]

One row per case: the worst, the median and the best case by mean foreground Dice (so the figure shows the
spread, not a chosen example), three orthogonal slices through the reference foreground's centre, each as
reference | prediction over the image (channel 0, ``<case>_0000.nii.gz`` as nnU-Net names it). Slice names
(axial / coronal / sagittal) come from the NIfTI affine (``nibabel.aff2axcodes``); voxel spacing sets the aspect.
"""
import argparse
import json
import math
from pathlib import Path
from typing import List, Optional

import numpy as np

# orientation code of an array axis -> the plane a slice across that axis shows
PLANES = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "R": "sagittal", "L": "sagittal"}


def case_dice(summary: dict) -> List[tuple]:
    """[(case id, mean foreground Dice, prediction file, reference file)] from nnU-Net's summary.json, ascending
    by Dice. A class absent from both reference and prediction (nnU-Net writes NaN) is left out of the mean."""
    cases = []
    for entry in summary["metric_per_case"]:
        values = [m["Dice"] for m in entry["metrics"].values() if not math.isnan(m["Dice"])]
        mean = float(np.mean(values)) if values else float("nan")
        name = Path(entry["prediction_file"]).name
        cases.append((name[:-len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem, mean,
                      Path(entry["prediction_file"]), Path(entry["reference_file"])))
    return sorted(cases, key=lambda c: (math.isnan(c[1]), c[1]))


def pick_cases(cases: List[tuple]) -> List[tuple]:
    """Worst, median and best (fewer when there are fewer cases), in that order."""
    if len(cases) <= 3:
        return list(cases)
    return [cases[0], cases[(len(cases) - 1) // 2], cases[-1]]


def _planes(affine: np.ndarray) -> List[str]:
    import nibabel as nib
    return [PLANES.get(code, f"axis {i}") for i, code in enumerate(nib.aff2axcodes(affine))]


def write_segmentation_figure(summary_file: Path, images_dir: Path, out_png: Path,
                              label_names: Optional[dict] = None) -> List[tuple]:
    """Write the figure; return the cases shown as [(case id, mean foreground Dice)].

    ``label_names``: nnU-Net's dataset.json ``labels`` ({name: value}); the legend uses the names. Raises
    FileNotFoundError naming a missing image (``<case>_0000.nii.gz`` in ``images_dir``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    shown = pick_cases(case_dice(json.loads(Path(summary_file).read_text())))
    if not shown:
        raise ValueError(f"{summary_file} lists no case.")
    names = {int(v): k for k, v in (label_names or {}).items() if not isinstance(v, (list, tuple)) and int(v) > 0}
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(shown), 6, figsize=(13, 2.4 * len(shown) + 0.6), squeeze=False)
    classes = set()
    for row, (case, dice, prediction_file, reference_file) in enumerate(shown):
        image_file = Path(images_dir) / f"{case}_0000.nii.gz"
        if not image_file.is_file():
            raise FileNotFoundError(f"No image {image_file} for case {case}: pass the folder nnUNetv2_predict read.")
        image_nii = nib.load(str(image_file))
        image = np.asarray(image_nii.dataobj, dtype=np.float32)
        reference = np.asarray(nib.load(str(reference_file)).dataobj).astype(np.int64)
        prediction = np.asarray(nib.load(str(prediction_file)).dataobj).astype(np.int64)
        classes |= set(np.unique(reference).tolist()) | set(np.unique(prediction).tolist())
        foreground = np.argwhere(reference > 0)
        centre = foreground.mean(0).round().astype(int) if len(foreground) else np.array(image.shape) // 2
        low, high = np.percentile(image, [1, 99])
        zooms = image_nii.header.get_zooms()[:3]
        planes = _planes(image_nii.affine)
        top = max(int(reference.max()), int(prediction.max()), 1)  # one colour per class value, as in the legend
        cmap = ListedColormap([colours[(c - 1) % len(colours)] for c in range(1, top + 1)])
        for view, axis in enumerate((2, 1, 0)):
            others = [a for a in range(3) if a != axis]
            # rows of the displayed slice = the second remaining axis, so the first runs left to right
            aspect = zooms[others[1]] / zooms[others[0]]
            for column, (labels, title) in enumerate(((reference, "reference"), (prediction, "prediction"))):
                ax = axes[row, 2 * view + column]
                ax.imshow(np.take(image, centre[axis], axis).T, cmap="gray", vmin=low, vmax=high, origin="lower",
                          aspect=aspect, interpolation="nearest")
                slice_labels = np.take(labels, centre[axis], axis).T
                ax.imshow(np.ma.masked_equal(slice_labels, 0), cmap=cmap, vmin=0.5, vmax=top + 0.5, alpha=0.45,
                          origin="lower", aspect=aspect, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{planes[axis]} {centre[axis]}: {title}", fontsize=8)
        axes[row, 0].set_ylabel(f"{case}\nDice {dice:.3f}", fontsize=9)
    handles = [Patch(color=colours[(c - 1) % len(colours)], alpha=0.6, label=names.get(c, f"label {c}"))
               for c in sorted(classes) if c > 0]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), fontsize=9, frameon=False)
    fig.suptitle("held-back cases: worst, median and best by mean foreground Dice (nnUNetv2_evaluate_folder)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return [(case, dice) for case, dice, _, _ in shown]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summary", type=Path, help="summary.json of nnUNetv2_evaluate_folder")
    parser.add_argument("images", type=Path, help="the folder of input images nnUNetv2_predict read (-i)")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--labels", type=Path, help="dataset.json whose 'labels' name the classes")
    args = parser.parse_args(argv)
    labels = json.loads(args.labels.read_text())["labels"] if args.labels else None
    for case, dice in write_segmentation_figure(args.summary, args.images, args.out, labels):
        print(f"{case}: mean foreground Dice {dice:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
