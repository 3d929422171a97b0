"""Warn when a planned 3D patch is mostly padding along an axis (thick-slice, anisotropic data).

A pretrained network has a fixed minimum patch (anatomix: 32 voxels per axis after its 4 poolings). For MRI with 9
slices at 4 mm, or CT at 3 x 3 x 12 mm with 8 slices, the median image is far thinner than that along the slice axis,
so nnU-Net's sampler pads every patch: 23 of 32 slices are zeros, each step pays for them and the network sees mostly
padding. The planner cannot shrink the patch below the network's minimum; what helps is resampling that axis finer
(``-overwrite_target_spacing``, values computed here so that the median image fills the patch) or a 2D encoder, which
plans in-plane slices.

Threshold: more than half of the patch is padding along an axis for the median image, i.e. median < patch / 2
(``PADDING_THRESHOLD``). Below that, the patch still mostly holds image; nnU-Net itself pads patches up to the median
shape's next multiple of its stride.
"""
import math
from typing import List, Optional, Sequence, Tuple

PADDING_THRESHOLD = 0.5
# the 2D encoder a padding warning names first: pretrained on medical images, its weights a public download
PREFERRED_2D_ENCODER = "meddinov3_vitb16"


def padded_axes(patch: Sequence[int], median: Sequence[float],
                threshold: float = PADDING_THRESHOLD) -> List[Tuple[int, float]]:
    """(axis, fraction of the patch that is padding for the median image) where that fraction exceeds
    ``threshold``."""
    return [(a, 1 - float(m) / float(p)) for a, (p, m) in enumerate(zip(patch, median))
            if float(p) > 0 and 1 - float(m) / float(p) > threshold]


def filling_spacing(spacing: Sequence[float], patch: Sequence[int], median: Sequence[float],
                    axes: Sequence[int]) -> List[float]:
    """The spacing (same axis order as ``spacing``) at which the median image fills the patch along ``axes``:
    s * median / patch, rounded down to 0.001 mm so that the resampled median is not below the patch."""
    fixed = [float(s) for s in spacing]
    for a in axes:
        fixed[a] = max(0.001, math.floor(float(spacing[a]) * float(median[a]) / float(patch[a]) * 1000) / 1000)
    return fixed


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def two_d_alternative(dataset_id: int) -> Optional[str]:
    """The command that plans a registered 2D encoder instead, with its trainer, and the other 2D encoders."""
    from nnfm.registry import encoders

    choices = encoders("2d", include_tiny=False)
    if not choices:
        return None
    first = next((e for e in choices if e.name == PREFERRED_2D_ENCODER), choices[0])
    others = ", ".join(f"-e {e.name}" for e in choices if e is not first)
    return (f"    $ nnFM_plan_and_preprocess -d {dataset_id} -e {first.name}\n"
            f"  then nnUNetv2_train {dataset_id} 2d FOLD -tr {first.trainer} -p {first.plans_name}"
            + (f" (other 2D encoders: {others})" if others else ""))


def padding_warning(plans: dict, configuration: str, dataset_id: int, replan_command: str,
                    threshold: float = PADDING_THRESHOLD) -> Optional[str]:
    """The warning for a 3D configuration whose patch is more than ``threshold`` padding along an axis, with the
    ``-overwrite_target_spacing`` values (nnU-Net's axis order: the plans' spacing put back through
    ``transpose_backward``) appended to ``replan_command``, and the 2D alternative. None when nothing is padded."""
    config = plans["configurations"][configuration]
    patch, median, spacing = config["patch_size"], config["median_image_size_in_voxels"], config["spacing"]
    if len(patch) != 3:
        return None
    padded = padded_axes(patch, median, threshold)
    if not padded:
        return None
    fixed = filling_spacing(spacing, patch, median, [a for a, _ in padded])
    backward = plans.get("transpose_backward", [0, 1, 2])
    target = [fixed[backward[j]] for j in range(3)]
    lines = [f"WARNING (nnFM): the planned patch {list(patch)} is mostly padding for this dataset's median image "
             f"{[round(float(m), 1) for m in median]} (spacing [{', '.join(_number(s) for s in spacing)}] mm, the "
             f"plans' axis order):"]
    for a, fraction in padded:
        lines.append(f"  axis {a} ({_number(spacing[a])} mm): the median image has {float(median[a]):g} voxels, the "
                     f"patch {patch[a]}: {fraction:.0%} of every patch along it is padding (warned above "
                     f"{threshold:.0%}); the network cannot take a smaller patch.")
    factor = max(float(spacing[a]) / fixed[a] for a, _ in padded)
    lines.append(f"  Fix: resample that axis finer so that the median image fills the patch ({factor:.1f}x more "
                 f"slices, interpolated; -overwrite_target_spacing is in nnU-Net's axis order):")
    lines.append(f"    $ {replan_command} -overwrite_target_spacing {' '.join(_number(s) for s in target)}")
    alternative = two_d_alternative(dataset_id)
    if alternative:
        lines.append("  or plan a 2D encoder, which takes in-plane slices and pads nothing across them:")
        lines.append(alternative)
    return "\n".join(lines)
