"""Datasets for the benchmark: MSD conversion with reproducibly held-out test cases, and test-set lookup.

Held-out cases never enter nnU-Net's training folder (imagesTr): the fingerprint, the plans,
preprocessing and every fold are made without them. Their images go to the raw dataset's
imagesTs (converted by nnU-Net's MSD converter) and their labels to labelsTs.
"""
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from nnfm.benchmark.commands import run_command
from nnfm.paths import console_script

SOURCE_MARKER = "nnfm_benchmark_source.json"


class DataConflict(RuntimeError):
    pass


def find_dataset_folder(root: Path, dataset_id: int) -> Optional[Path]:
    matches = sorted(p for p in Path(root).glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())
    if len(matches) > 1:
        raise DataConflict(f"More than one dataset with id {dataset_id} in {root}: {[m.name for m in matches]}")
    return matches[0] if matches else None


def dataset_name(env: dict, dataset_id: int) -> str:
    for root in ("nnUNet_raw", "nnUNet_preprocessed"):
        folder = find_dataset_folder(Path(env[root]), dataset_id)
        if folder is not None:
            return folder.name
    raise DataConflict(f"Dataset {dataset_id} is neither in nnUNet_raw ({env['nnUNet_raw']}) nor in "
                       f"nnUNet_preprocessed ({env['nnUNet_preprocessed']}); pass --msd PATH to convert one.")


def training_case_ids(raw_folder: Path) -> list:
    """Case identifiers of imagesTr/labelsTr, as nnU-Net lists them."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    return sorted(get_filenames_of_train_images_and_targets(str(raw_folder)))


def msd_case_ids(msd: Path) -> list:
    meta = json.loads((msd / "dataset.json").read_text())
    return sorted(Path(entry["label"]).name[:-len(".nii.gz")] for entry in meta["training"])


def draw_cases(case_ids: list, test_cases: int, max_cases: Optional[int], seed: int) -> tuple:
    """(training pool, held-out test cases): a reproducible shuffle, cut to max_cases, test cases first."""
    ids = sorted(case_ids)
    random.Random(f"nnFM benchmark cases, seed {seed}").shuffle(ids)
    if max_cases:
        ids = ids[:max_cases]
    if test_cases >= len(ids):
        raise DataConflict(f"{test_cases} test cases leave no training case out of {len(ids)}.")
    return sorted(ids[test_cases:]), sorted(ids[:test_cases])


def prepare_msd(msd: Path, dataset_id: int, test_cases: int, max_cases: Optional[int], seed: int, env: dict,
                num_processes: int, log_file: Path, verbose: bool = False) -> Path:
    """Convert an MSD task as dataset_id unless that was done already with the same choices; the raw folder."""
    msd = msd.resolve()
    if not (msd / "dataset.json").is_file():
        raise DataConflict(f"No MSD dataset at {msd} (dataset.json missing).")
    raw_root = Path(env["nnUNet_raw"])
    raw_root.mkdir(parents=True, exist_ok=True)
    source = {"msd": str(msd), "max_cases": max_cases, "test_cases": test_cases, "seed": seed}
    in_progress = raw_root / f".nnfm_benchmark_converting_{dataset_id:03d}"
    existing = find_dataset_folder(raw_root, dataset_id)
    if existing is not None and in_progress.exists():
        print(f"  removing {existing.name}: its conversion was interrupted")
        shutil.rmtree(existing)
        existing = None
    if existing is not None:
        return _check_same_source(existing, source)

    all_cases = msd_case_ids(msd)
    pool, test = draw_cases(all_cases, test_cases, max_cases, seed)
    in_progress.write_text(json.dumps(source))
    with tempfile.TemporaryDirectory() as scratch:
        # a linked copy holds exactly the chosen cases; nnU-Net's converter reads the folder name (TaskXX_Name)
        subset = bool(test) or len(pool) < len(all_cases)
        folder = _link_msd_subset(msd, Path(scratch) / msd.name, pool, test) if subset else msd
        if subset:
            print(f"  (-i below: a temporary folder of links to {len(pool)} training and {len(test)} test cases of "
                  f"{msd}, removed after the conversion; test images go to imagesTs, their labels to labelsTs)")
        run_command([console_script("nnUNetv2_convert_MSD_dataset"), "-i", folder, "-overwrite_id", dataset_id,
                     "-np", num_processes], env, log_file, verbose)
    raw = find_dataset_folder(raw_root, dataset_id)
    if test:
        (raw / "labelsTs").mkdir(exist_ok=True)
        for case in test:
            shutil.copy(msd / "labelsTr" / f"{case}.nii.gz", raw / "labelsTs" / f"{case}.nii.gz")
    (raw / SOURCE_MARKER).write_text(json.dumps(dict(source, training_cases=pool, held_out_test_cases=test),
                                                indent=1))
    in_progress.unlink()
    return raw


def _check_same_source(raw: Path, source: dict) -> Path:
    marker = raw / SOURCE_MARKER
    if not marker.is_file():
        raise DataConflict(f"{raw} exists and was not made by nnFM_benchmark: choose another dataset id, or drop "
                           "--msd to benchmark it as it is.")
    made = json.loads(marker.read_text())
    if {k: made.get(k) for k in source} != source:
        raise DataConflict(f"{raw.name} was converted with {({k: made.get(k) for k in source})}, not {source}: "
                           "choose another dataset id or the same options.")
    print(f"  {raw.name}: already converted ({len(made['training_cases'])} training, "
          f"{len(made['held_out_test_cases'])} held-out test cases)")
    return raw


def _link_msd_subset(msd: Path, target: Path, pool: list, test: list) -> Path:
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (target / sub).mkdir(parents=True)
    for case in pool:
        for sub in ("imagesTr", "labelsTr"):
            (target / sub / f"{case}.nii.gz").symlink_to(msd / sub / f"{case}.nii.gz")
    for case in test:
        (target / "imagesTs" / f"{case}.nii.gz").symlink_to(msd / "imagesTr" / f"{case}.nii.gz")
    meta = json.loads((msd / "dataset.json").read_text())
    meta["training"] = [t for t in meta["training"] if Path(t["label"]).name[:-len(".nii.gz")] in pool]
    meta["numTraining"] = len(meta["training"])
    meta["test"] = [f"./imagesTs/{case}.nii.gz" for case in test]
    meta["numTest"] = len(test)
    (target / "dataset.json").write_text(json.dumps(meta, indent=1))
    return target


def test_set(raw: Optional[Path], images: Optional[Path] = None, labels: Optional[Path] = None) -> Optional[tuple]:
    """(images, labels) folders of a labelled test set: given ones, else the raw dataset's imagesTs + labelsTs."""
    if images or labels:
        if not (images and labels and images.is_dir() and labels.is_dir()):
            raise DataConflict("--test-images and --test-labels must both name existing folders.")
        return images.resolve(), labels.resolve()
    if raw is not None and (raw / "labelsTs").is_dir() and any((raw / "labelsTs").iterdir()):
        return raw / "imagesTs", raw / "labelsTs"
    return None
