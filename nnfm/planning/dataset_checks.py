"""Check a raw nnU-Net dataset before any planning work: every training image and label map, once.

``nnFM_plan_and_preprocess`` runs :func:`check_dataset` before nnU-Net's fingerprint, so that bad data stops the
command with one error that names each file, the problem and the fix, instead of an assertion deep in a
multiprocessing traceback (NaN), an IndexError (no foreground anywhere) or a crash at the first validation step
(a label value dataset.json does not declare). The kinds:

- files: a case without its label map or without one of its channels (dataset.json ``channel_names``), a file that
  cannot be read, ``numTraining`` that differs from the cases found;
- non-finite voxels (NaN, +-Inf) in any channel of any image, or in a label map (any reader: NIfTI readers turn NaN
  into 0, NRRD / MHA keep it);
- labels: values in the label maps that dataset.json ``labels`` does not declare (nnU-Net's ignore label counts as
  declared), non-integer values, declared values that are not consecutive, and label maps that hold only background
  in every case;
- geometry: channels of one case on different grids (size, spacing, origin by more than half a voxel, direction),
  a label map whose size or spacing differs from its images;
- degenerate channels: a channel with one value in every case (an error), or in some cases (a warning).

nnU-Net's own building blocks are used for what they already define: the case list
(``get_filenames_of_train_images_and_targets``), the reader (``determine_reader_writer_from_dataset_json``) and the
valid label values (``LabelManager.all_labels`` plus the ignore label), the same rules nnU-Net's
``verify_dataset_integrity`` applies; that function (``--verify_dataset_integrity``) prints its findings and raises
a generic error, does not check Inf, background-only label maps or channel geometry, and reads every file twice, so
nnFM's check is the default and nnU-Net's runs in addition on request.

A passed check is remembered in ``nnUNet_preprocessed/DATASET/nnfm_dataset_check.json`` (the files' sizes and
modification times and dataset.json): re-planning an unchanged dataset for another encoder does not read it again.
"""
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from nnfm.errors import DatasetError

CHECK_FILE = "nnfm_dataset_check.json"
CHECK_VERSION = 1
MAX_LISTED = 10          # files listed per kind of problem (the count says how many more)
ORIGIN_TOLERANCE = 0.5   # channels' origins may differ by this fraction of the smallest voxel spacing
DIRECTION_TOLERANCE = 1e-3


@dataclass
class DatasetCheck:
    """What a passed check saw: the case count, channel count, label values found and warnings."""
    folder: str
    n_cases: int
    n_channels: int
    label_values: List[float]
    warnings: List[str] = field(default_factory=list)
    cached: bool = False

    def summary(self) -> str:
        how = "unchanged since its last check" if self.cached else "every image and label map read"
        return (f"nnFM dataset check: {self.n_cases} training cases, {self.n_channels} channel(s), label values "
                f"{_values(self.label_values)} in the maps: OK ({how}).")


# ---- one case ----------------------------------------------------------------------------------------------
def _geometry(properties: dict, shape) -> dict:
    """Size, spacing (nnU-Net's axis order) and, where the reader records them, origin and direction."""
    geometry = {"shape": [int(s) for s in shape], "spacing": [float(s) for s in properties["spacing"]]}
    if "sitk_stuff" in properties:
        geometry["origin"] = [float(v) for v in properties["sitk_stuff"]["origin"]]
        geometry["direction"] = [float(v) for v in properties["sitk_stuff"]["direction"]]
    elif "nibabel_stuff" in properties:
        affine = np.asarray(properties["nibabel_stuff"]["original_affine"], dtype=float)
        scale = np.linalg.norm(affine[:3, :3], axis=0)
        geometry["origin"] = affine[:3, 3].tolist()
        geometry["direction"] = (affine[:3, :3] / np.where(scale == 0, 1, scale)).ravel().tolist()
    return geometry


def inspect_case(identifier: str, image_files: Sequence[str], label_file: str, reader_class) -> dict:
    """Everything the check needs from one case, without its voxels: per channel its geometry, non-finite counts and
    whether it is constant; the label map's geometry and values. Read problems are recorded, not raised."""
    reader = reader_class()
    facts = {"case": identifier, "channels": [], "label": None, "read_errors": []}
    for c, file in enumerate(image_files):
        try:
            data, properties = reader.read_images([file])
        except Exception as error:  # noqa: BLE001 - any reader failure is reported with its file
            facts["read_errors"].append((file, f"{type(error).__name__}: {str(error).strip()[:200]}"))
            continue
        channel = np.asarray(data[0])
        finite = np.isfinite(channel)
        n_nan = int(np.count_nonzero(np.isnan(channel)))
        n_inf = int(channel.size - np.count_nonzero(finite) - n_nan)
        values = channel[finite] if n_nan + n_inf else channel
        low, high = (float(values.min()), float(values.max())) if values.size else (float("nan"), float("nan"))
        facts["channels"].append(dict(_geometry(properties, channel.shape), file=str(file), channel=c, nan=n_nan,
                                      inf=n_inf, voxels=int(channel.size), min=low, max=high))
    if not os.path.isfile(label_file):
        facts["read_errors"].append((label_file, "missing"))
        return facts
    try:
        seg, properties = reader.read_seg(label_file)
    except Exception as error:  # noqa: BLE001
        facts["read_errors"].append((label_file, f"{type(error).__name__}: {str(error).strip()[:200]}"))
        return facts
    seg = np.asarray(seg[0])
    finite = np.isfinite(seg)
    values = np.unique(seg[finite]) if not finite.all() else np.unique(seg)
    facts["label"] = dict(_geometry(properties, seg.shape), file=str(label_file),
                          nonfinite=int(seg.size - np.count_nonzero(finite)), values=[float(v) for v in values])
    return facts


def _inspect(arguments) -> dict:
    return inspect_case(*arguments)


# ---- the whole dataset ---------------------------------------------------------------------------------------
def _values(values) -> str:
    return "[" + ", ".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in values) + "]"


def _listed(lines: List[str]) -> List[str]:
    shown = [f"    {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"    ... and {len(lines) - MAX_LISTED} more")
    return shown


def _signature(folder: Path, dataset_json: dict, dataset: Dict[str, dict]) -> str:
    digest = hashlib.sha256(json.dumps(dataset_json, sort_keys=True).encode())
    for key in sorted(dataset):
        for file in list(dataset[key]["images"]) + [dataset[key]["label"]]:
            try:
                stat = os.stat(file)
                digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            except OSError:
                digest.update(f"{file}|missing".encode())
    digest.update(f"v{CHECK_VERSION}|{folder}".encode())
    return digest.hexdigest()


def expected_label_values(dataset_json: dict) -> List[int]:
    """The label values nnU-Net accepts in a label map: LabelManager's ``all_labels`` and the ignore label."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    manager = LabelManager(dataset_json["labels"], regions_class_order=dataset_json.get("regions_class_order"))
    expected = [int(v) for v in manager.all_labels]
    if manager.has_ignore_label:
        expected.append(int(manager.ignore_label))
    return sorted(set(expected))


def check_dataset(folder, num_processes: int = 1, cache_file=None, progress: bool = False) -> DatasetCheck:
    """Read every training case of the raw dataset ``folder`` once and raise DatasetError listing every problem
    (each kind with its files and its fix), or return what was seen. ``cache_file``: remember a passed check there
    and skip the reading when dataset.json and every file's size and modification time are unchanged."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    folder = Path(folder)
    dataset_json_file = folder / "dataset.json"
    if not dataset_json_file.is_file():
        raise DatasetError(f"{folder} has no dataset.json. Fix: write one as nnU-Net documents it "
                           f"(documentation/dataset_format.md of nnU-Net: channel_names, labels, numTraining, "
                           f"file_ending), or convert the dataset with nnUNetv2_convert_MSD_dataset.")
    dataset_json = json.loads(dataset_json_file.read_text())
    missing_keys = [k for k in ("labels", "channel_names", "numTraining", "file_ending") if k not in dataset_json]
    if "channel_names" not in dataset_json and "modality" in dataset_json:
        missing_keys.remove("channel_names")
    if missing_keys:
        raise DatasetError(f"{dataset_json_file} lacks {', '.join(missing_keys)}. Fix: add them (nnU-Net's "
                           f"dataset.json needs channel_names, labels, numTraining and file_ending).")
    dataset = get_filenames_of_train_images_and_targets(str(folder), dataset_json)
    channel_names = dataset_json.get("channel_names", dataset_json.get("modality"))
    n_channels = len(channel_names)
    if not dataset:
        raise DatasetError(f"{folder / 'imagesTr'} holds no training image ending in {dataset_json['file_ending']!r}. "
                           f"Fix: put the images there as CASE_0000{dataset_json['file_ending']} (one file per "
                           f"channel, _0000, _0001, ...), or correct file_ending in {dataset_json_file}.")
    signature = _signature(folder, dataset_json, dataset)
    if cache_file is not None and Path(cache_file).is_file():
        try:
            cached = json.loads(Path(cache_file).read_text())
        except ValueError:
            cached = {}
        if cached.get("signature") == signature:
            return DatasetCheck(str(folder), cached["n_cases"], cached["n_channels"], cached["label_values"],
                                cached.get("warnings", []), cached=True)

    reader_class = determine_reader_writer_from_dataset_json(dataset_json, next(iter(dataset.values()))["images"][0])
    jobs = [(key, dataset[key]["images"], dataset[key]["label"], reader_class) for key in sorted(dataset)]
    processes = min(max(1, int(num_processes)), len(jobs))
    if processes > 1 and len(jobs) >= 2 * processes:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            facts = pool.map(_inspect, jobs, chunksize=max(1, len(jobs) // (4 * processes)))
    else:
        facts = [_inspect(job) for job in jobs]

    problems = _problems(facts, dataset_json, dataset_json_file, channel_names, len(dataset))
    warnings = _constant_in_some_cases(facts, channel_names)
    if problems:
        raise DatasetError("\n".join(
            [f"nnFM checked the {len(dataset)} training cases of {folder} before any planning work and found "
             f"problems; nothing was planned or preprocessed."] + problems))
    label_values = sorted({v for f in facts for v in f["label"]["values"]})
    result = DatasetCheck(str(folder), len(dataset), n_channels, label_values, warnings)
    if cache_file is not None:
        try:
            Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
            Path(cache_file).write_text(json.dumps({"signature": signature, "n_cases": result.n_cases,
                                                    "n_channels": n_channels, "label_values": label_values,
                                                    "warnings": warnings}, indent=1))
        except OSError:
            pass  # a read-only nnUNet_preprocessed only costs the next check its shortcut
    return result


def _channel_name(channel_names: dict, c: int) -> str:
    name = channel_names.get(str(c), channel_names.get(c))
    return f"channel {c} ({name})" if name is not None else f"channel {c}"


def _problems(facts: List[dict], dataset_json: dict, dataset_json_file: Path, channel_names: dict,
              n_found: int) -> List[str]:
    """Every problem, grouped by kind, each kind with its fix."""
    problems = []

    def kind(title: str, lines: List[str], fix: str) -> None:
        if lines:
            problems.extend([f"- {title}:"] + _listed(lines) + [f"  Fix: {fix}"])

    n_channels = len(channel_names)
    kind("files that are missing or cannot be read",
         [f"{file}: {why}" for f in facts for file, why in f["read_errors"]] +
         [f"case {f['case']}: {len(f['channels'])} channel file(s), dataset.json channel_names declares {n_channels} "
          f"(expected {f['case']}_0000 ... _{n_channels - 1:04d}{dataset_json['file_ending']})"
          for f in facts if not f["read_errors"] and len(f["channels"]) != n_channels],
         "give every case one readable image per channel (CASE_0000, CASE_0001, ... in imagesTr) and its label map "
         "(CASE in labelsTr, same file ending), or remove the case; re-export files that cannot be read.")
    if dataset_json.get("numTraining") != n_found and not any(f["read_errors"] for f in facts):
        kind("numTraining differs from the cases found",
             [f"{dataset_json_file}: numTraining {dataset_json.get('numTraining')}, imagesTr holds {n_found} cases"],
             f"set \"numTraining\": {n_found} in {dataset_json_file} (or add the missing cases).")

    nonfinite = [f"{ch['file']}: {_channel_name(channel_names, ch['channel'])}: {ch['nan']} NaN and {ch['inf']} Inf "
                 f"of {ch['voxels']} voxels" for f in facts for ch in f["channels"] if ch["nan"] or ch["inf"]]
    nonfinite += [f"{f['label']['file']} (label map): {f['label']['nonfinite']} non-finite voxels"
                  for f in facts if f["label"] and f["label"]["nonfinite"]]
    kind(f"non-finite voxels (NaN / Inf) in {len(nonfinite)} file(s)", nonfinite,
         "replace them in those files with a value that means something in the image (its background or minimum), "
         "e.g. with SimpleITK and numpy: a = sitk.GetArrayFromImage(img); a[~np.isfinite(a)] = "
         "a[np.isfinite(a)].min(); out = sitk.GetImageFromArray(a); out.CopyInformation(img); "
         "sitk.WriteImage(out, file). nnU-Net's normalisation, fingerprint and training need finite voxels (it stops "
         "with 'Images contains NaN values' otherwise, and Inf turns into NaN losses).")

    geometry = []
    for f in facts:
        channels = f["channels"]
        for ch in channels[1:]:
            geometry += [f"case {f['case']}: {difference} of {_channel_name(channel_names, ch['channel'])} "
                         f"({ch['file']}) differs from channel 0 ({channels[0]['file']})"
                         for difference in _grid_differences(channels[0], ch)]
    kind("channels of one case on different voxel grids", geometry,
         "resample each listed channel onto channel 0's grid of its case (e.g. SimpleITK: sitk.Resample(channel, "
         "channel_0, sitk.Transform(), sitk.sitkLinear, 0.0), then write it) so that all channels of a case share "
         "size, spacing, origin and direction: nnU-Net stacks the channels voxel by voxel.")
    label_grid = []
    for f in facts:
        if f["label"] and f["channels"]:
            image, label = f["channels"][0], f["label"]
            if image["shape"] != label["shape"]:
                label_grid.append(f"{label['file']}: size {label['shape']}, its image {image['shape']}")
            elif not np.allclose(image["spacing"], label["spacing"]):
                label_grid.append(f"{label['file']}: spacing {label['spacing']}, its image {image['spacing']}")
    kind("label maps on another grid than their images", label_grid,
         "write each label map on its image's grid (same size and spacing; SimpleITK: sitk.Resample(label, image, "
         "sitk.Transform(), sitk.sitkNearestNeighbor, 0)).")

    labelled = [f for f in facts if f["label"]]
    expected = expected_label_values(dataset_json)
    undeclared, fractional = {}, []
    for f in labelled:
        values = f["label"]["values"]
        bad = [v for v in values if float(v).is_integer() and int(v) not in expected]
        if bad:
            undeclared[f["label"]["file"]] = bad
        odd = [v for v in values if not float(v).is_integer()]
        if odd:
            fractional.append(f"{f['label']['file']}: {_values(odd[:5])}")
    if undeclared:
        found = sorted({int(v) for values in undeclared.values() for v in values})
        kind(f"label values {_values(found)} in the label maps are not declared in dataset.json",
             [f"{file}: {_values(values)}" for file, values in undeclared.items()],
             _undeclared_fix(found, dataset_json, dataset_json_file))
    kind("label maps with non-integer values", fractional,
         "label maps hold integer class values (0 background, 1, 2, ...): round or re-export them with nearest-"
         "neighbour interpolation.")
    try:
        consecutive = all(b - a == 1 for a, b in zip(expected, expected[1:])) and expected[:1] == [0]
    except TypeError:
        consecutive = True
    if not consecutive:
        kind("dataset.json labels are not consecutive", [f"{dataset_json_file}: labels {dataset_json['labels']}"],
             "number the labels 0 (background), 1, 2, ... without gaps, in dataset.json and in the label maps.")

    if labelled and len(labelled) == len(facts) and \
            all(not any(v != 0 for v in f["label"]["values"]) for f in labelled):
        kind(f"every one of the {len(labelled)} label maps holds only background (0)",
             [f"{f['label']['file']}" for f in labelled],
             "put the annotated label maps into labelsTr (one per case, named like its images without the _0000 "
             "suffix); empty masks usually come from an export that lost the annotation. With no foreground there is "
             "nothing to learn, and nnU-Net's fingerprint fails on it (IndexError).")

    for c in range(n_channels):
        ranges = [(f["case"], ch) for f in facts for ch in f["channels"] if ch["channel"] == c]
        if ranges and len(ranges) == len(facts) and all(ch["min"] == ch["max"] for _, ch in ranges):
            kind(f"{_channel_name(channel_names, c)} has one value in every case",
                 [f"{ch['file']}: every voxel {ch['min']:g}" for _, ch in ranges],
                 f"remove {_channel_name(channel_names, c)} from imagesTr and from channel_names in "
                 f"{dataset_json_file}, or supply its real images: a constant channel carries no information, and its "
                 f"intensity statistics (percentiles, standard deviation) are degenerate.")
    return problems


def _grid_differences(reference: dict, other: dict) -> List[str]:
    differences = []
    if reference["shape"] != other["shape"]:
        differences.append(f"size {other['shape']} vs {reference['shape']}")
    if len(reference["spacing"]) == len(other["spacing"]) and not np.allclose(reference["spacing"], other["spacing"]):
        differences.append(f"spacing {_mm(other['spacing'])} vs {_mm(reference['spacing'])} mm")
    if "origin" in reference and "origin" in other and len(reference["origin"]) == len(other["origin"]):
        tolerance = ORIGIN_TOLERANCE * min(reference["spacing"] + other["spacing"])
        if np.max(np.abs(np.subtract(reference["origin"], other["origin"]))) > tolerance:
            differences.append(f"origin {_mm(other['origin'])} vs {_mm(reference['origin'])} mm")
    if "direction" in reference and "direction" in other and len(reference["direction"]) == len(other["direction"]):
        if np.max(np.abs(np.subtract(reference["direction"], other["direction"]))) > DIRECTION_TOLERANCE:
            differences.append(f"direction {_mm(other['direction'])} vs {_mm(reference['direction'])}")
    return differences


def _mm(values) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def _undeclared_fix(found: List[int], dataset_json: dict, dataset_json_file: Path) -> str:
    declared = expected_label_values(dataset_json)
    top = max(declared) if declared else 0
    if found == list(range(top + 1, top + 1 + len(found))):
        entries = ", ".join(f'"label_{v}": {v}' for v in found)
        declare = f"declare them in the \"labels\" of {dataset_json_file} ({entries}, named as you like)"
    else:
        declare = (f"declare them in the \"labels\" of {dataset_json_file}; nnU-Net needs the values 0, 1, ..., N "
                   f"without gaps, so declare every value up to {max(found)} or remap the maps' values to consecutive "
                   f"ones")
    return (f"{declare}, or, if they are mistakes, correct those label maps. Planned as they are, nnU-Net would "
            f"preprocess them and stop at the first validation step (index out of bounds).")


def _constant_in_some_cases(facts: List[dict], channel_names: dict) -> List[str]:
    constant = [f"{ch['file']} ({_channel_name(channel_names, ch['channel'])}): every voxel {ch['min']:g}"
                for f in facts for ch in f["channels"] if ch["min"] == ch["max"]]
    if not constant:
        return []
    return [f"{len(constant)} image(s) are constant (one value everywhere): " + "; ".join(constant[:MAX_LISTED])
            + (f"; ... and {len(constant) - MAX_LISTED} more" if len(constant) > MAX_LISTED else "")
            + ". nnU-Net normalises them to 0; check that these are the images you meant."]
