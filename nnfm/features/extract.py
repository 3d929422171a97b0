"""``nnFM_extract_features``: an encoder's dense features of each image, as a multi-channel NIfTI in the image's
own geometry. This is how anatomix is used for training-free registration and kNN segmentation (neel-dey/anatomix
README and anatomix/registration/registration_infrastructure/features.py: normalise each volume, sliding-window
inference of the U-Net's dense output, resample the features back to the image grid).

Every step is nnU-Net's own, run outside a dataset:

1. read with the plans' reader (SimpleITKIO without plans), turn the array into the closest RAS+ orientation (axis
   permutation and flips only, as registration tools and nibabel's as_closest_canonical; the layout nnU-Net's
   NibabelIOWithReorient reads), so the same anatomy gives the same features whatever the file's axis order, and
   preprocess with ``DefaultPreprocessor.run_case_npy`` (transpose, crop to the nonzero region, normalise, resample
   to the configuration's spacing);
2. sliding window with overlap: ``pad_nd_image``, ``compute_steps_for_sliding_window`` and the Gaussian importance
   map ``compute_gaussian`` of nnunetv2.inference.sliding_window_prediction, as nnUNetPredictor uses them;
3. back to the original geometry in the order of nnU-Net's export (nnunetv2/inference/export_prediction.py):
   ``resampling_fn_probabilities`` to the cropped shape, the crop put back into the full image (0 outside the
   nonzero bounding box), ``transpose_backward``, then the RAS+ reorientation undone (the file's own axis order);
4. write one float32 NIfTI per case, ``OUT/<case>.nii.gz``: 4D, channels on the 4th axis, voxel grid, spacing,
   origin and direction of the input (SimpleITK ``JoinSeries``; nibabel with the original affine for NibabelIO).

Intensities and spacing: with ``-p PLANS_JSON`` (the plans of a planned dataset) everything comes from those plans
and, when they were made for this encoder, the network's planned input convention and window (weights pretrained on
another convention are refused). Without plans, the input convention the weights were pretrained with
(nnfm/conventions.py; recorded with the weights, else the encoder's): a windowed convention clips each image to its
own 0.5 / 99.5 percentiles (anatomix's per-volume min-max), ``zscore`` feeds nnU-Net's per-image z-scores as they
are, ``hu_window`` clips CT to its HU window (CTNormalization with that window as clip) on its grid.
"""
import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nnfm.conventions import InputConvention
from nnfm.errors import ConfigurationError, NNFMError
from nnfm.flags import parse_args

DEFAULT_TILE = (128, 128, 128)
NORMALIZATION_SCHEMES = {"zscore": "ZScoreNormalization", "ct": "CTNormalization"}
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class Case:
    name: str
    files: List[str]


def _fail(message: str) -> None:
    raise ConfigurationError(f"nnFM_extract_features: {message}")


# ---- inputs ------------------------------------------------------------------------------------------------
def _strip_ending(name: str, endings: Sequence[str]) -> Optional[str]:
    for ending in sorted(endings, key=len, reverse=True):
        if name.lower().endswith(ending.lower()):
            return name[:-len(ending)]
    return None


def collect_cases(inputs: Sequence[str], endings: Sequence[str]) -> List[Case]:
    """Files and folders -> cases. In a folder whose files are all named ``CASE_XXXX<ending>`` (nnU-Net's channel
    convention) the files of one CASE are its channels; otherwise every image file is a one-channel case."""
    cases: List[Case] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            stem = _strip_ending(path.name, endings)
            if stem is None:
                _fail(f"{path} is not an image nnU-Net's reader takes (endings: {', '.join(endings)}).")
            match = CHANNEL_SUFFIX.match(stem)
            cases.append(Case(match.group("case") if match and match.group("channel") == "0000" else stem, [str(path)]))
        elif path.is_dir():
            images = sorted((p, _strip_ending(p.name, endings)) for p in path.iterdir() if p.is_file())
            images = [(p, s) for p, s in images if s is not None]
            if not images:
                _fail(f"{path} holds no image ({', '.join(endings)}).")
            if all(CHANNEL_SUFFIX.match(s) for _, s in images):
                grouped: Dict[str, List[Tuple[str, str]]] = {}
                for p, s in images:
                    m = CHANNEL_SUFFIX.match(s)
                    grouped.setdefault(m.group("case"), []).append((m.group("channel"), str(p)))
                for name, files in sorted(grouped.items()):
                    channels = sorted(files)
                    if [c for c, _ in channels] != [f"{i:04d}" for i in range(len(channels))]:
                        _fail(f"case {name} in {path} has channels {[c for c, _ in channels]}; nnU-Net's naming needs "
                              f"_0000, _0001, ... without gaps.")
                    cases.append(Case(name, [f for _, f in channels]))
            else:
                cases += [Case(s, [str(p)]) for p, s in images]
        else:
            _fail(f"input {path} does not exist.")
    if not cases:
        _fail("no input images.")
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        _fail(f"several inputs would write the same output name(s): {', '.join(duplicates)}.")
    channel_counts = {len(c.files) for c in cases}
    if len(channel_counts) > 1:
        _fail(f"cases have different numbers of channels ({sorted(channel_counts)}); run them separately.")
    return cases


def check_images_are_3d(cases: Sequence[Case]) -> None:
    """Read every file's header (not its voxels): 3D, one component, and the channels of a case on one grid (size,
    spacing, origin within half a voxel, direction), as nnU-Net stacks them voxel by voxel."""
    import SimpleITK as sitk

    from nnfm.planning.dataset_checks import DIRECTION_TOLERANCE, ORIGIN_TOLERANCE

    for case in cases:
        grids = []
        for file in case.files:
            reader = sitk.ImageFileReader()
            reader.SetFileName(file)
            try:
                reader.ReadImageInformation()
            except RuntimeError as error:
                _fail(f"{file} cannot be read as an image ({str(error).strip().splitlines()[-1][:200]}).")
            size = reader.GetSize()
            if reader.GetDimension() != 3 or min(size) < 2 or reader.GetNumberOfComponents() != 1:
                _fail(f"{file} is a {reader.GetDimension()}D image of size {list(size)} with "
                      f"{reader.GetNumberOfComponents()} component(s); the encoders here are 3D and take one 3D volume "
                      f"per channel (several channels: CASE_0000, CASE_0001, ... in one folder).")
            grids.append((file, list(size), list(reader.GetSpacing()), list(reader.GetOrigin()),
                          list(reader.GetDirection())))
        first = grids[0]
        for file, size, spacing, origin, direction in grids[1:]:
            differences = []
            if size != first[1]:
                differences.append(f"size {size} vs {first[1]}")
            if not np.allclose(spacing, first[2]):
                differences.append(f"spacing {_rounded(spacing)} vs {_rounded(first[2])} mm")
            if np.max(np.abs(np.subtract(origin, first[3]))) > ORIGIN_TOLERANCE * min(spacing + first[2]):
                differences.append(f"origin {_rounded(origin)} vs {_rounded(first[3])} mm")
            if np.max(np.abs(np.subtract(direction, first[4]))) > DIRECTION_TOLERANCE:
                differences.append(f"direction {_rounded(direction)} vs {_rounded(first[4])}")
            if differences:
                _fail(f"the channels of case {case.name} are on different voxel grids: {file} has "
                      f"{'; '.join(differences)} of channel 0 ({first[0]}). nnU-Net stacks the channels of a case "
                      f"voxel by voxel. Fix: resample {Path(file).name} onto channel 0's grid (e.g. SimpleITK: "
                      f"sitk.Resample(channel, channel_0, sitk.Transform(), sitk.sitkLinear, 0.0), then write it), "
                      f"or extract the channels as separate cases (one folder each).")


def _rounded(values) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def check_finite_voxels(cases: Sequence[Case]) -> None:
    """Read every file's voxels once before any compute: NaN / Inf (NRRD, MHA and others keep them; NIfTI readers
    turn NaN into 0) would reach the network as NaN features, or a window of NaN."""
    import SimpleITK as sitk

    bad = []
    for case in cases:
        for c, file in enumerate(case.files):
            image = sitk.ReadImage(file)  # bound: a view of a temporary Image reads freed memory (NaN seen in CI)
            array = sitk.GetArrayViewFromImage(image)
            finite = np.isfinite(array)
            if not finite.all():
                n_nan = int(np.count_nonzero(np.isnan(array)))
                bad.append(f"{file} (channel {c}): {n_nan} NaN and {int(array.size - finite.sum()) - n_nan} Inf of "
                           f"{array.size} voxels")
    if bad:
        listed = "\n".join(f"    {line}" for line in bad[:10]) + (f"\n    ... and {len(bad) - 10} more" if len(bad) > 10
                                                                   else "")
        _fail(f"{len(bad)} input image(s) hold non-finite voxels (NaN / Inf); nothing was computed:\n{listed}\n"
              f"Fix: replace them with a value that means something in the image (its background or minimum), e.g. "
              f"a = sitk.GetArrayFromImage(img); a[~np.isfinite(a)] = a[np.isfinite(a)].min(); out = "
              f"sitk.GetImageFromArray(a); out.CopyInformation(img); sitk.WriteImage(out, file).")


def check_output_writable(out: Path) -> None:
    """Write (then delete) a file in ``out``, or in its nearest existing parent folder when it does not exist yet
    (it is created only when the features are written), before any compute: a read-only or full output folder stops
    the command now, not after the first image's features."""
    import tempfile

    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".nnfm_write_test_", suffix=".nii.gz"):
            pass
    except OSError as error:
        _fail(f"cannot write into the output folder {out} ({type(error).__name__}: {error.strerror or error}); "
              f"nothing was computed. Fix: choose a folder you can write to (-o), or make {out} writable.")


# ---- plans ---------------------------------------------------------------------------------------------------
def convention_for(convention) -> dict:
    """Without plans: the nnU-Net scheme, CT window and target spacing (None: the image's own) of an
    ``InputConvention``. zscore = nnU-Net's ZScoreNormalization per image (a windowed convention then takes each
    channel's 0.5 / 99.5 percentiles as its window); ct = CTNormalization with the HU window as clip and centre,
    which maps [lo, hi] to [-1, 1] exactly as clipping raw HU to it and scaling does."""
    return {"normalization": "ct" if convention.hu_window else "zscore", "ct_window": convention.hu_window,
            "spacing": convention.spacing_mm}


def default_plans(num_channels: int, tile: Sequence[int], normalization: str,
                  ct_window: Optional[Sequence[float]], spacing: Optional[Sequence[float]]) -> dict:
    """A one-configuration nnU-Net plans dict for images without a planned dataset.

    Resampling functions and their kwargs are nnU-Net's defaults (ExperimentPlanner.determine_resampling /
    determine_segmentation_softmax_export_fn). CT: CTNormalization with ``ct_window`` as its clip and centre /
    half-width as mean / std, so [lo, hi] -> [-1, 1]. ``spacing`` None: replaced by each image's own spacing.
    """
    properties = {}
    if normalization == "ct":
        lo, hi = float(ct_window[0]), float(ct_window[1])
        properties = {"mean": (lo + hi) / 2, "std": (hi - lo) / 2, "percentile_00_5": lo, "percentile_99_5": hi,
                      "min": lo, "max": hi, "median": (lo + hi) / 2}
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "nnFM_extract_features", "preprocessor_name": "DefaultPreprocessor", "batch_size": 1,
        "patch_size": [int(t) for t in tile], "median_image_size_in_voxels": [int(t) for t in tile],
        "spacing": [float(s) for s in spacing] if spacing is not None else [1.0, 1.0, 1.0],
        "normalization_schemes": [NORMALIZATION_SCHEMES[normalization]] * num_channels,
        "use_mask_for_norm": [False] * num_channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": dict(resampling, is_seg=True, order=1),
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": dict(resampling, order=1),
        "architecture": {"network_class_name": "-", "arch_kwargs": {}, "_kw_requires_import": []},
        "batch_dice": False,
    }
    return {"dataset_name": "nnFM_extract_features", "plans_name": "nnFM_extract_features",
            "original_median_spacing_after_transp": configuration["spacing"],
            "original_median_shape_after_transp": configuration["patch_size"],
            "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {"3d_fullres": configuration}, "experiment_planner_used": "nnFM_extract_features",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {str(c): properties for c in range(num_channels)}}


def load_plans(path: str, configuration: str):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    file = Path(path)
    if not file.is_file():
        _fail(f"plans file {file} does not exist (nnU-Net writes them to $nnUNet_preprocessed/DATASET/<plans>.json).")
    try:
        plans = json.loads(file.read_text())
        manager = PlansManager(plans)
        available = list(plans["configurations"])
    except (ValueError, KeyError, TypeError) as error:
        _fail(f"{file} is not an nnU-Net plans file ({type(error).__name__}: {error}).")
    if configuration not in available:
        _fail(f"{file} has no configuration {configuration!r}; it has {', '.join(available)} (-c).")
    config = manager.get_configuration(configuration)
    if len(config.spacing) != 3:
        _fail(f"configuration {configuration!r} of {file} is {len(config.spacing)}D; dense features need a 3D one.")
    return plans, manager, config


# ---- network -------------------------------------------------------------------------------------------------
def build_feature_network(entry, num_channels: int, arch_kwargs: Optional[dict], weights: Optional[str],
                          tile: Optional[Sequence[int]] = None, convention: Optional[InputConvention] = None):
    """The encoder's segmentation network (plans kwargs when given, else the preset fed the weights' input
    convention: ``convention`` where the caller has it, else ``planned_convention``, which may read the whole file)
    with the pretrained encoder loaded.

    Without plans the network gets what its class needs for dense features (``DENSE_FEATURE_KWARGS``, e.g.
    anatomix-dev-vit's pretrained up-projection) and, where it is built for one input shape (ViTs), ``tile``.
    Returns (network in eval mode, load report or None). The network must define ``dense_features``. Raises
    ConfigurationError when the plans feed the network another convention than the weights were pretrained on."""
    import inspect
    import pydoc

    from nnfm.networks.from_plans import build_network
    from nnfm.weights import is_random_init, load_pretrained, pretrained_target
    from nnfm.weights.input_convention import check_fed_convention, planned_convention

    if arch_kwargs is not None:
        kwargs = dict(arch_kwargs)
    else:
        network_class = pydoc.locate(entry.network_class)
        kwargs = dict(entry.kwargs(), **getattr(network_class, "DENSE_FEATURE_KWARGS", {}))
        if len(network_class.INPUT_NORMS) > 1:
            kwargs["input_norm"] = (convention or planned_convention(entry, weights)).name
        if tile is not None and "input_shape" in inspect.signature(network_class).parameters:
            kwargs["input_shape"] = [int(t) for t in tile]
    network = build_network(entry.network_class, kwargs, [], num_channels, 1, False)
    report = None
    if not is_random_init(weights):
        report = load_pretrained(pretrained_target(network), weights, family=entry.families)
        check_fed_convention(network, report.input_convention, weights, entry.name, entry.configuration)
    return network.eval(), report


def feature_encoders() -> List[str]:
    """Registered 3D encoders with pretrained weights whose network defines ``dense_features``."""
    import pydoc

    from nnfm.registry import encoders
    return [e.name for e in encoders(include_tiny=False) if e.configuration == "3d_fullres" and e.weights
            and hasattr(pydoc.locate(e.network_class), "dense_features")]


def set_window(network, window: Sequence[Sequence[float]], zero_is_background: Sequence[bool]) -> None:
    from nnfm.networks.intensity_window import IntensityWindow

    device = next(network.parameters()).device
    network.input_window = IntensityWindow(len(window), window, zero_is_background=list(zero_is_background)).to(device)


def per_image_window(data: np.ndarray, files: Sequence[str] = ()) -> List[List[float]]:
    """Each channel's 0.5 / 99.5 percentiles (nnfm.planning.intensity): anatomix's per-volume clip + min-max."""
    from nnfm.planning.intensity import PERCENTILES

    window = []
    for c, channel in enumerate(data):
        lo, hi = (float(v) for v in np.percentile(channel, PERCENTILES))
        if not hi > lo:
            where = f" of {files[c]}" if c < len(files) else ""
            _fail(f"channel {c}{where} has no intensity range after preprocessing (0.5 and 99.5 percentiles both "
                  f"{lo:g}): at least 99% of its voxels have one value, so there is no window to map to the encoder's "
                  f"input. Fix: check that the image holds what you meant (not an empty or mask volume), or leave "
                  f"it out.")
        window.append([lo, hi])
    return window


# ---- sliding window ------------------------------------------------------------------------------------------
@torch.no_grad()
def sliding_window_features(network, data: torch.Tensor, tile: Sequence[int], step_size: float,
                            device: torch.device, progress: bool = True, description: str = "") -> torch.Tensor:
    """(C, *shape) preprocessed image -> (F, *shape) features, Gaussian-weighted over overlapping tiles
    (nnunetv2.inference.sliding_window_prediction, as nnUNetPredictor: sigma 1/8 of the tile, zero padding)."""
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
    from tqdm import tqdm

    padded, revert = pad_nd_image(data, list(tile), "constant", {"value": 0}, True, None)
    steps = compute_steps_for_sliding_window(padded.shape[1:], list(tile), step_size)
    slicers = [tuple(slice(s, s + t) for s, t in zip(start, tile))
               for start in np.array(np.meshgrid(*steps, indexing="ij")).reshape(3, -1).T]
    gaussian = compute_gaussian(tuple(tile), sigma_scale=1. / 8, value_scaling_factor=10, dtype=torch.float32,
                                device=torch.device("cpu"))
    features = torch.zeros((network.dense_feature_channels, *padded.shape[1:]), dtype=torch.float32)
    weights = torch.zeros(padded.shape[1:], dtype=torch.float32)
    for slicer in tqdm(slicers, desc=description, leave=False, disable=not progress, unit="tile"):
        tile_features = network.dense_features(padded[(slice(None), *slicer)][None].to(device))[0]
        features[(slice(None), *slicer)] += tile_features.float().cpu() * gaussian
        weights[slicer] += gaussian
    features /= weights
    return features[(slice(None), *revert[1:])]


# ---- geometry ------------------------------------------------------------------------------------------------
def axis_directions_ras(properties: dict) -> np.ndarray:
    """(3, 3): column n is the RAS+ world direction of axis n of the reader's array (nnU-Net's (z, y, x) order).

    SimpleITKIO records ITK's LPS direction matrix, whose column a is index axis a (array axis 2 - a); NibabelIO
    records the RAS affine of the (i, j, k) voxel axes and transposes the array to (k, j, i)
    (nnunetv2/imageio/simpleitk_reader_writer.py, nibabel_reader_writer.py)."""
    if "sitk_stuff" in properties:
        lps = np.array(properties["sitk_stuff"]["direction"], dtype=float).reshape(3, 3)
        voxel_axes = np.diag([-1.0, -1.0, 1.0]) @ lps  # LPS -> RAS: x and y change sign
    elif "nibabel_stuff" in properties and "reoriented_affine" not in properties["nibabel_stuff"]:
        voxel_axes = np.asarray(properties["nibabel_stuff"]["original_affine"], dtype=float)[:3, :3]
    else:
        _fail("the plans' image reader records no geometry nnFM can write back (SimpleITKIO and NibabelIO can).")
    return voxel_axes[:, ::-1]


def canonical_orientation(properties: dict) -> Tuple[List[int], List[int]]:
    """(perm, flips) that bring the reader's array into the closest RAS+ orientation, in nnU-Net's axis order:
    canonical axis m is the reader's axis perm[m], reversed where m is in flips; axis 0 then runs inferior ->
    superior, 1 posterior -> anterior, 2 left -> right (nibabel's as_closest_canonical, transposed as nnU-Net's
    NibabelIOWithReorient reads). Axis permutations and flips only, never a resampling: an oblique image keeps
    its voxel grid and goes to the nearest axes (nibabel.orientations.io_orientation, as registration tools and
    TotalSegmentator do before nnU-Net: wasserth/TotalSegmentator totalsegmentator/alignment.py)."""
    from nibabel.orientations import io_orientation

    affine = np.eye(4)
    affine[:3, :3] = axis_directions_ras(properties)[::-1]  # world axes as (S, A, R): nnU-Net's order of a RAS image
    orientation = io_orientation(affine)  # row n: (canonical axis of array axis n, -1 where reversed)
    perm = [int(np.flatnonzero(orientation[:, 0] == m)[0]) for m in range(3)]
    flips = [m for m in range(3) if orientation[perm[m], 1] < 0]
    return perm, flips


def to_canonical(data: np.ndarray, properties: dict):
    """(C, *reader axes) -> (C, *canonical axes), the spacing in canonical order, and the orientation for
    ``from_canonical``. The network sees every image of the same anatomy the same way, whatever the file's axis
    order (a CNN's features are not invariant to flips and transposes)."""
    perm, flips = canonical_orientation(properties)
    canonical = np.flip(data.transpose(0, *(1 + p for p in perm)), axis=tuple(1 + m for m in flips))
    spacing = [properties["spacing"][p] for p in perm]
    return np.ascontiguousarray(canonical), spacing, (perm, flips)


def from_canonical(array: np.ndarray, orientation) -> np.ndarray:
    """The inverse of ``to_canonical`` for any leading (channel) axis: undo the flips, then the permutation."""
    perm, flips = orientation
    unflipped = np.flip(array, axis=tuple(1 + m for m in flips))
    return np.ascontiguousarray(unflipped.transpose(0, *(1 + m for m in np.argsort(perm))))


def to_original_geometry(features: np.ndarray, properties: dict, plans_manager, configuration_manager) -> np.ndarray:
    """nnU-Net's export order (export_prediction.py): resample to the cropped shape, put the crop back, transpose."""
    from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice

    spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    resampled = configuration_manager.resampling_fn_probabilities(
        features, properties["shape_after_cropping_and_before_resampling"], configuration_manager.spacing, spacing)
    resampled = np.asarray(resampled, dtype=np.float32)
    full = np.zeros((features.shape[0], *properties["shape_before_cropping"]), dtype=np.float32)
    full[(slice(None), *bounding_box_to_slice(properties["bbox_used_for_cropping"]))] = resampled
    return full.transpose([0] + [i + 1 for i in plans_manager.transpose_backward])


def write_features(features: np.ndarray, properties: dict, path: Path) -> None:
    """(F, *reader axes) float32 -> a 4D NIfTI (x, y, z, F) in the geometry the reader recorded."""
    if "sitk_stuff" in properties:
        import SimpleITK as sitk

        stuff = properties["sitk_stuff"]
        volumes = []
        for channel in features:
            image = sitk.GetImageFromArray(np.ascontiguousarray(channel))
            image.SetSpacing(stuff["spacing"])
            image.SetOrigin(stuff["origin"])
            image.SetDirection(stuff["direction"])
            volumes.append(image)
        sitk.WriteImage(sitk.JoinSeries(volumes), str(path), True)
    elif "nibabel_stuff" in properties and "reoriented_affine" not in properties["nibabel_stuff"]:
        import nibabel

        # NibabelIO reads (x, y, z) and transposes to (z, y, x); undo that, channels last
        array = np.ascontiguousarray(features.transpose(3, 2, 1, 0))
        nibabel.save(nibabel.Nifti1Image(array, properties["nibabel_stuff"]["original_affine"]), str(path))
    else:
        _fail("the plans' image reader records no geometry nnFM can write back (SimpleITKIO and NibabelIO can).")


# ---- command -------------------------------------------------------------------------------------------------
def extract_features(inputs: Sequence[str], output: str, encoder: str = "anatomix", weights: Optional[str] = None,
                     plans: Optional[str] = None, configuration: Optional[str] = None,
                     normalization: Optional[str] = None, ct_window: Optional[Sequence[float]] = None,
                     spacing: Optional[Sequence[float]] = None, native_spacing: bool = False,
                     tile: Optional[Sequence[int]] = None, step_size: float = 0.5, device: Optional[str] = None,
                     progress: bool = True, file_orientation: bool = False) -> List[Path]:
    """Write ``OUT/<case>.nii.gz`` (float32, F channels on the 4th axis, the input's geometry) for every case.

    Each image is computed in the closest RAS+ orientation (``to_canonical``) and its features turned back into
    the file's own axis order, so the same anatomy gets the same features from differently ordered files;
    ``file_orientation`` computes on the file's own axis order instead (as nnU-Net's prediction does).

    Raises ConfigurationError (naming the problem and the fix) before any image is processed for: an unknown,
    2D or feature-less encoder, missing or non-3D inputs, a channel count that differs from the plans', unreadable
    plans, a tile not divisible by the encoder's stride, CT normalisation without a window, bad spacing or step.
    """
    import pydoc

    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from tqdm import tqdm

    from nnfm.registry import get_encoder

    entry = get_encoder(encoder)
    if entry.configuration != "3d_fullres" or not hasattr(pydoc.locate(entry.network_class), "dense_features"):
        _fail(f"encoder {encoder!r} has no dense 3D features to export; use one of: {', '.join(feature_encoders())}.")
    if not 0 < step_size <= 1:
        _fail(f"-step_size must be in (0, 1] (fraction of the tile between windows), got {step_size}.")
    from nnfm.conventions import get_convention
    from nnfm.weights.input_convention import planned_convention

    from nnfm.weights.loading import resolve_weights_folder

    weights, note = resolve_weights_folder(weights or entry.weights)  # a downloaded snapshot folder: its only file
    if note and progress:
        print(f"nnFM_extract_features: {note}", file=sys.stderr)
    planned = planned_convention(entry, weights)  # reads a .pth whole: once, for the input stage and the network
    convention = convention_for(planned)
    if plans is not None and (normalization or ct_window or spacing or native_spacing):
        _fail("-p PLANS_JSON sets normalisation and spacing; leave out --normalization / --ct-window / --spacing / "
              "--native-spacing, or leave out -p.")
    out = Path(output)
    if out.exists() and not out.is_dir():
        _fail(f"output {out} exists and is not a folder.")

    reader_class = SimpleITKIO
    arch_kwargs, window_from_plans = None, False
    if plans is not None:
        plans_dict, plans_manager, config = load_plans(plans, configuration or entry.configuration)
        reader_class = plans_manager.image_reader_writer_class
        if reader_class.__name__ not in ("SimpleITKIO", "NibabelIO"):
            _fail(f"the plans read images with {reader_class.__name__}; nnFM_extract_features writes NIfTI in the "
                  f"geometry SimpleITKIO or NibabelIO record.")
        if pydoc.locate(config.network_arch_class_name) is pydoc.locate(entry.network_class):
            arch_kwargs, window_from_plans = dict(config.network_arch_init_kwargs), True
        tile = tile or config.patch_size
    cases = collect_cases(inputs, reader_class.supported_file_endings)
    check_images_are_3d(cases)
    channels = len(cases[0].files)
    if plans is not None and len(config.normalization_schemes) != channels:
        _fail(f"the plans normalise {len(config.normalization_schemes)} channel(s), the images have {channels}.")
    if plans is None:
        normalization = normalization or convention["normalization"]
        if ct_window is not None and normalization != "ct":
            _fail("--ct-window applies to --normalization ct only.")
        ct_window = ct_window or (convention["ct_window"] if normalization == "ct" else None)
        if normalization == "ct" and (ct_window is None or not float(ct_window[0]) < float(ct_window[1])):
            _fail(f"--normalization ct needs --ct-window LO HI in HU with LO < HI (encoder {encoder!r} has no HU "
                  f"convention of its own), got {ct_window}.")
        if native_spacing:
            spacing = None
        elif spacing is None:
            spacing = convention["spacing"]
        if spacing is not None and (len(spacing) != 3 or min(float(s) for s in spacing) <= 0):
            _fail(f"--spacing needs three positive values in mm (nnU-Net's axis order), got {list(spacing)}.")
    tile = [int(t) for t in (tile or DEFAULT_TILE)]
    if len(tile) != 3 or any(t % entry.token_stride or t < entry.min_axis for t in tile):
        suggestion = [max(entry.min_axis, -(-t // entry.token_stride) * entry.token_stride) for t in tile]
        _fail(f"tile {tile} does not fit encoder {encoder!r}: three axes, each a multiple of {entry.token_stride} "
              f"and at least {entry.min_axis}; e.g. --tile {' '.join(map(str, suggestion))}.")

    check_finite_voxels(cases)  # every voxel read once: after the cheap checks, before the network and any compute
    check_output_writable(out)
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    network, report = build_feature_network(entry, channels, arch_kwargs, weights, tile, planned)
    # a windowed convention (anatomix's [0, 1], DrasCLR's [-1, 1]) needs each image's window; z-scores go in as they are
    windowed = get_convention(getattr(network, "input_norm", "window01")).output_range is not None
    network.to(torch_device)
    if report is not None and progress:
        print(report.format(), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    canonical = not file_orientation
    written = []
    for case in tqdm(cases, desc="nnFM_extract_features", unit="image", disable=not progress):
        data, read_properties = reader_class().read_images(case.files)
        properties = {"spacing": read_properties["spacing"]}
        orientation = None
        if canonical:  # nnU-Net's pipeline below runs on the canonical array; the reader's geometry is kept to write
            data, properties["spacing"], orientation = to_canonical(data, read_properties)
        if plans is None:  # spacing None: the image's own grid (nnU-Net's axis order of the array it works on)
            case_spacing = spacing if spacing is not None else properties["spacing"]
            plans_manager = PlansManager(default_plans(channels, tile, normalization, ct_window, case_spacing))
            config = plans_manager.get_configuration("3d_fullres")
        data, _, properties = DefaultPreprocessor(verbose=False).run_case_npy(
            data, None, properties, plans_manager, config, {})
        if windowed and not window_from_plans:
            if plans is None and normalization == "ct":
                set_window(network, [[-1.0, 1.0]] * channels, [False] * channels)
            else:
                set_window(network, per_image_window(data, case.files), config.use_mask_for_norm)
        features = sliding_window_features(network, torch.from_numpy(data), tile, step_size, torch_device,
                                           progress, case.name)
        features = to_original_geometry(features.numpy(), properties, plans_manager, config)
        if orientation is not None:
            features = from_canonical(features, orientation)
        target = out / f"{case.name}.nii.gz"
        write_features(features, read_properties, target)
        written.append(target)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Dense encoder features of 3D images, one multi-channel NIfTI per image in its own geometry "
                    "(e.g. anatomix features for registration or kNN segmentation).")
    parser.add_argument("-i", "--input", nargs="+", required=True,
                        help="image files and/or folders (a folder of CASE_0000.nii.gz, CASE_0001.nii.gz ... files "
                             "gives multi-channel cases)")
    parser.add_argument("-o", "--output", required=True, help="output folder: OUT/<case>.nii.gz")
    parser.add_argument("-e", "--encoder", default="anatomix", help="registered encoder with dense features")
    parser.add_argument("-w", "--weights", default=None,
                        help="registry name or checkpoint path ('random' for none); default: the encoder's weights")
    parser.add_argument("-p", "--plans", default=None,
                        help="nnU-Net plans JSON of a planned dataset: its spacing, normalisation and reader (and the "
                             "planned intensity window if the plans are this encoder's)")
    parser.add_argument("-c", "--configuration", default=None, help="configuration in -p (default 3d_fullres)")
    parser.add_argument("--normalization", choices=sorted(NORMALIZATION_SCHEMES), default=None,
                        help="without -p: nnU-Net's ZScoreNormalization per image (then each channel's 0.5/99.5 "
                             "percentiles are the encoder's input range) or CTNormalization with --ct-window. "
                             "Default: the weights' input convention (ct for a HU-window convention, else zscore; "
                             "python -m nnfm.registry --markdown lists each encoder's)")
    parser.add_argument("--ct-window", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                        help="HU window for --normalization ct (default: the weights' convention's HU window)")
    spacing = parser.add_mutually_exclusive_group()
    spacing.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("S0", "S1", "S2"),
                         help="without -p: target spacing in mm, in nnU-Net's axis order of the RAS+ image the "
                              "features are computed on (inferior-superior, posterior-anterior, left-right) "
                              "(default: the grid of the weights' convention where it names one, else the image's "
                              "own)")
    spacing.add_argument("--native-spacing", action="store_true", help="without -p: keep each image's own spacing")
    parser.add_argument("--file-orientation", action="store_true",
                        help="compute on each file's own axis order (nnU-Net's prediction) instead of the closest "
                             "RAS+ orientation; e.g. with -p of a dataset whose images are stored in another "
                             "orientation")
    parser.add_argument("--tile", type=int, nargs=3, default=None,
                        help=f"sliding-window tile (default: the plans' patch, else {DEFAULT_TILE[0]}^3)")
    parser.add_argument("-step_size", type=float, default=0.5, help="window step as a fraction of the tile (0.5)")
    parser.add_argument("-device", default=None, help="cuda, cpu or mps (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parse_args(parser, argv)  # nnFM's flag dialect: either spelling of a long flag
    try:
        written = extract_features(args.input, args.output, args.encoder, args.weights, args.plans,
                                   args.configuration, args.normalization, args.ct_window, args.spacing,
                                   args.native_spacing, args.tile, args.step_size, args.device, not args.no_progress,
                                   args.file_orientation)
    except NNFMError as error:
        message = str(error)
        raise SystemExit(message if message.startswith("nnFM_extract_features") else
                         f"nnFM_extract_features: {message}") from None
    print(f"nnFM_extract_features: wrote {len(written)} feature image(s) to {args.output}")


if __name__ == "__main__":
    main()
