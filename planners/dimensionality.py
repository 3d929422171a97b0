"""Refuse 2D datasets for 3D-only encoders, with the encoders that do work on them.

nnU-Net's own planner plans no 3D configuration for 2D data; nnFM's 3D planners (anatomix U-Net,
Primus) would otherwise plan a 3D patch such as 32x64x48 for images one slice thick.
"""
from typing import Iterable, Sequence

from nnfm.errors import ConfigurationError
from nnfm.registry import encoders

# file endings nnU-Net reads as single 2D images (NaturalImage2DIO: 1 x H x W)
TWO_D_FILE_ENDINGS = (".png", ".bmp", ".jpg", ".jpeg")


def is_2d_dataset(shapes: Iterable[Sequence[int]], file_ending: str = "") -> bool:
    """True if every training image is one slice thick (nnU-Net puts that axis first) or the files are 2D."""
    shapes = [list(s) for s in shapes]
    if str(file_ending).lower() in TWO_D_FILE_ENDINGS:
        return True
    return bool(shapes) and all(len(s) == 2 or int(s[0]) == 1 for s in shapes)


def encoders_for(configuration: str) -> list:
    return [e.name for e in encoders(configuration, include_tiny=False)]


def refuse_2d_dataset_for_3d_encoder(fingerprint: dict, dataset_json: dict, encoder: str) -> None:
    """Raise ConfigurationError if the fingerprint's images are 2D; ``encoder`` only plans 3d_fullres."""
    shapes = fingerprint.get("shapes_after_crop", [])
    if not is_2d_dataset(shapes, dataset_json.get("file_ending", "")):
        return
    options = ", ".join(f"-e {e}" for e in encoders_for("2d"))
    raise ConfigurationError(
        f"This dataset is 2D (every training image is one slice thick, file ending "
        f"{dataset_json.get('file_ending')!r}), but encoder {encoder!r} is a 3D network and would get a 3D patch "
        f"for 1-slice images. nnU-Net plans no 3D configuration for 2D data either. Use a 2D encoder on this "
        f"dataset: nnFM_plan_and_preprocess -d ID {options.replace(', ', ' | ')} (then nnUNetv2_train ID 2d ...).")


def check_network_fits_patch(network, patch_size: Sequence[int], configuration: str) -> None:
    """Raise ConfigurationError if a 3D-only network is trained on a 2D configuration or the reverse.

    Plans made for another network (``-p nnUNetPlans -c 2d`` with nnFMTrainer) reach the trainer
    without nnFM's planner, so the trainer checks too. ``network.ndim`` defaults to 3.
    """
    ndim = getattr(network, "ndim", 3)
    if len(patch_size) == ndim:
        return
    trainers = ", ".join(e.trainer for e in encoders("2d" if len(patch_size) == 2 else "3d_fullres"))
    raise ConfigurationError(
        f"{type(network).__name__} is a {ndim}D network, but configuration {configuration!r} has a "
        f"{len(patch_size)}D patch {list(patch_size)}. Train it on a {ndim}D configuration "
        f"({'3d_fullres' if ndim == 3 else '2d'}), or this configuration with one of: {trainers}.")
