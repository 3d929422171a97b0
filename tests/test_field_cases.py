"""Field cases (issue 30): bad data is stopped before any work, every error's advice fits, nothing is lost silently.

Each test reproduces one kind of failure users reported (nnU-Net, nnssl, anatomix, DINOv3 issues) on tiny datasets
written from a few MSD Hippocampus cases of ../shared (NRRD where NaN / Inf must survive: NIfTI readers turn NaN
into 0), and checks the product's words: the file, the problem and the fix. Where an error advises a command, the
test runs it. Every test here failed on the code before issue 30 (see the issue's table).

Planning runs in this process (nnU-Net 2.8.1 reads its folders from the environment at each use); the tests that
run nnU-Net's command-line tools or train are marked e2e.
"""
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import BIN, HIPPOCAMPUS, run_cli

LABELS = {"background": 0, "Anterior": 1, "Posterior": 2}


# ---- tiny datasets ------------------------------------------------------------------------------------------
def raw_dataset(raw: Path, dataset_id: int, name: str = "Field", n: int = 4, ending: str = ".nrrd", channels: int = 1,
                edit=None, labels=None) -> Path:
    """``n`` Hippocampus cases as an nnU-Net raw dataset; ``edit(i, images, label) -> (images, label)`` changes case
    ``i`` (SimpleITK images; ``images`` holds one image per channel, copies of the MRI)."""
    folder = raw / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    cases = sorted(p.name[:-len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("hippocampus_*.nii.gz"))[:n]
    for i, case in enumerate(cases):
        image = sitk.ReadImage(str(HIPPOCAMPUS / "imagesTr" / f"{case}.nii.gz"), sitk.sitkFloat32)
        label = sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz"))
        images = [sitk.Image(image) for _ in range(channels)]
        if edit is not None:
            images, label = edit(i, images, label)
        for c, channel in enumerate(images):
            sitk.WriteImage(channel, str(folder / "imagesTr" / f"{case}_{c:04d}{ending}"))
        sitk.WriteImage(label, str(folder / "labelsTr" / f"{case}{ending}"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): "MRI" if c == 0 else f"MRI{c}" for c in range(channels)},
        "labels": labels or LABELS, "numTraining": n, "file_ending": ending}, indent=1))
    return folder


def with_array(image: sitk.Image, change) -> sitk.Image:
    array = sitk.GetArrayFromImage(image)
    out = sitk.GetImageFromArray(change(array.copy()))
    out.CopyInformation(image)
    return out


def set_voxels(*assignments):
    """change(array) that writes each (index, value) of ``assignments`` into a copy."""
    def change(array):
        for index, value in assignments:
            array[index] = value
        return array
    return change


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch) -> dict:
    """Private nnU-Net folders in this process's environment (nnU-Net 2.8.1 reads them at each use)."""
    folders = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
        folders[name] = tmp_path / name
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    monkeypatch.chdir(tmp_path)
    return folders


def plan(dataset_id: int, **kwargs) -> str:
    from nnfm_planners.plan_and_preprocess import plan_and_preprocess

    return plan_and_preprocess(dataset_id, kwargs.pop("encoder", "anatomix"), num_processes=1,
                               preprocess=kwargs.pop("preprocess", False), **kwargs)


def refused(dataset_id: int, **kwargs) -> str:
    """The message nnFM_plan_and_preprocess stops with (SystemExit)."""
    with pytest.raises(SystemExit) as stopped:
        plan(dataset_id, **kwargs)
    return str(stopped.value)


def advised_commands(message: str) -> list:
    """The commands an error advises: its lines "    $ COMMAND"."""
    return [line.split("$ ", 1)[1] for line in message.splitlines() if line.strip().startswith("$ ")]


def run_advised(command: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run an advised command line as a user would paste it (leading VAR=value assignments included)."""
    words = shlex.split(command)
    env = dict(env)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return run_cli(words, env, check=check)


def _nothing_preprocessed(folders: dict, dataset_id: int, name: str = "Field") -> None:
    preprocessed = folders["nnUNet_preprocessed"] / f"Dataset{dataset_id:03d}_{name}"
    assert not (preprocessed / "dataset_fingerprint.json").exists()
    assert not list(preprocessed.glob("nnFMPlans_*.json"))


# ---- 1. data: non-finite voxels, labels, geometry, degenerate channels ---------------------------------------
def test_nan_and_inf_voxels_in_any_channel_stop_planning_naming_file_channel_and_count(nnunet_folders):
    """nnU-Net: 'Images contains NaN values. grrrr' after a multiprocessing traceback, no file named (Inf: not
    checked at all). nnFM: every file, its channel and the counts, before the fingerprint."""
    def edit(i, images, label):
        if i == 1:
            images[1] = with_array(images[1], set_voxels(((5, slice(10, 14), slice(10, 13)), np.nan)))
        if i == 2:
            images[0] = with_array(images[0], set_voxels(((6, 0, 0), np.inf), ((6, 0, 1), -np.inf)))
        return images, label
    folder = raw_dataset(nnunet_folders["nnUNet_raw"], 961, channels=2, edit=edit)
    message = refused(961)
    files = sorted(p.name for p in (folder / "imagesTr").iterdir())
    nan_file, inf_file = folder / "imagesTr" / files[3], folder / "imagesTr" / files[4]  # case 1 channel 1, case 2 ch. 0
    assert f"{nan_file}: channel 1 (MRI1): 12 NaN and 0 Inf of" in message
    assert f"{inf_file}: channel 0 (MRI): 0 NaN and 2 Inf of" in message
    assert "non-finite voxels (NaN / Inf) in 2 file(s)" in message and "Fix: replace them" in message
    _nothing_preprocessed(nnunet_folders, 961)


def test_label_maps_that_are_all_background_are_named_before_the_fingerprint(nnunet_folders):
    """nnU-Net: IndexError from the fingerprint extractor."""
    raw_dataset(nnunet_folders["nnUNet_raw"], 962, ending=".nii.gz",
                edit=lambda i, images, label: (images, with_array(label, lambda a: a * 0)))
    message = refused(962)
    assert "every one of the 4 label maps holds only background (0)" in message
    assert "hippocampus_001.nii.gz" in message and "Fix: put the annotated label maps into labelsTr" in message
    _nothing_preprocessed(nnunet_folders, 962)


def test_a_label_value_dataset_json_does_not_declare_is_refused_with_the_files_and_the_fix(nnunet_folders):
    """nnU-Net plans and preprocesses it without a word and dies at the first validation_step."""
    def edit(i, images, label):
        return images, (with_array(label, set_voxels(((10, 10, slice(5, 9)), 5))) if i in (0, 3) else label)
    folder = raw_dataset(nnunet_folders["nnUNet_raw"], 963, ending=".nii.gz", edit=edit)
    message = refused(963)
    assert "label values [5] in the label maps are not declared in dataset.json" in message
    assert f"{folder / 'labelsTr' / 'hippocampus_001.nii.gz'}: [5]" in message
    assert f"{folder / 'labelsTr' / 'hippocampus_006.nii.gz'}: [5]" in message
    assert f'declare them in the "labels" of {folder / "dataset.json"}' in message and "or remap" in message
    _nothing_preprocessed(nnunet_folders, 963)


def test_the_next_undeclared_label_gets_its_dataset_json_entry_in_the_advice(nnunet_folders):
    raw_dataset(nnunet_folders["nnUNet_raw"], 964, ending=".nii.gz",
                edit=lambda i, images, label: (images, with_array(label, set_voxels(((10, 10, 5), 3)))))
    assert '("label_3": 3, named as you like)' in refused(964)


def test_channels_of_one_case_on_different_grids_are_refused_in_planning(nnunet_folders):
    """nnU-Net: 'ERROR! Not all input images have the same spacing!' printed, then a bare RuntimeError traceback."""
    def edit(i, images, label):
        if i == 2:
            images[1].SetSpacing([1.0, 1.0, 2.0])
        if i == 3:
            images[1].SetOrigin([o + 7 for o in images[1].GetOrigin()])
        return images, label
    folder = raw_dataset(nnunet_folders["nnUNet_raw"], 965, channels=2, ending=".nii.gz", edit=edit)
    message = refused(965)
    assert "channels of one case on different voxel grids" in message
    assert re.search(r"case hippocampus_004: spacing \[2, 1, 1\] vs \[1, 1, 1\] mm of channel 1 \(MRI1\) \(\S+"
                     r"hippocampus_004_0001.nii.gz\) differs from channel 0", message), message
    assert "case hippocampus_006: origin" in message and "Fix: resample each listed channel onto channel 0's grid" \
        in message
    assert str(folder / "imagesTr" / "hippocampus_006_0000.nii.gz") in message
    _nothing_preprocessed(nnunet_folders, 965)


def test_a_channel_constant_in_every_case_is_refused(nnunet_folders):
    def edit(i, images, label):
        images[1] = with_array(images[1], lambda a: a * 0 + 7)
        return images, label
    raw_dataset(nnunet_folders["nnUNet_raw"], 966, channels=2, ending=".nii.gz", edit=edit)
    message = refused(966)
    assert "channel 1 (MRI1) has one value in every case" in message and "every voxel 7" in message
    assert "remove channel 1 (MRI1) from imagesTr and from channel_names" in message


def test_a_clean_dataset_passes_and_the_passed_check_is_remembered(nnunet_folders, capsys):
    from nnfm.planning.dataset_checks import CHECK_FILE, check_dataset

    folder = raw_dataset(nnunet_folders["nnUNet_raw"], 967, ending=".nii.gz")
    cache = nnunet_folders["nnUNet_preprocessed"] / "check.json"
    first = check_dataset(folder, cache_file=cache)
    assert (first.n_cases, first.n_channels, first.label_values, first.cached) == (4, 1, [0, 1, 2], False)
    assert check_dataset(folder, cache_file=cache).cached
    os.utime(folder / "labelsTr" / "hippocampus_001.nii.gz", (1, 1))  # a changed file is read again
    assert not check_dataset(folder, cache_file=cache).cached
    plan(967)
    assert "nnFM dataset check: 4 training cases, 1 channel(s), label values [0, 1, 2] in the maps: OK" in \
        capsys.readouterr().out
    assert (nnunet_folders["nnUNet_preprocessed"] / "Dataset967_Field" / CHECK_FILE).is_file()


# ---- 2. statistics in planning -------------------------------------------------------------------------------
@pytest.mark.e2e
def test_non_finite_fingerprint_statistics_stop_planning_and_the_advised_command_recovers(nnunet_folders):
    """A fingerprint with NaN statistics (an earlier run on data fixed since, nnUNetv2_extract_fingerprint) is kept
    by nnU-Net and planned on without a word; nnFM names its entries and the command that re-extracts it."""
    raw_dataset(nnunet_folders["nnUNet_raw"], 968, ending=".nii.gz")
    plan(968)
    fingerprint_file = nnunet_folders["nnUNet_preprocessed"] / "Dataset968_Field" / "dataset_fingerprint.json"
    fingerprint = json.loads(fingerprint_file.read_text())
    fingerprint["foreground_intensity_properties_per_channel"]["0"]["percentile_99_5"] = float("nan")
    fingerprint["spacings"][1] = [1.0, float("inf"), 1.0]
    fingerprint_file.write_text(json.dumps(fingerprint))
    (nnunet_folders["nnUNet_preprocessed"] / "Dataset968_Field" / "nnFMPlans_anatomix.json").unlink()
    message = refused(968)
    assert f"The dataset fingerprint {fingerprint_file} holds non-finite or degenerate statistics" in message
    assert "channel 0 foreground intensities: percentile_99_5 = nan" in message
    assert "spacings[1] = [1.0, inf, 1.0] (case 1)" in message
    assert not (nnunet_folders["nnUNet_preprocessed"] / "Dataset968_Field" / "nnFMPlans_anatomix.json").exists()
    [command] = advised_commands(message)
    assert command == "nnFM_plan_and_preprocess -d 968 -e anatomix --clean"
    run_advised(command + " -np 1 --no_pp", dict(os.environ))
    assert np.isfinite(json.loads(fingerprint_file.read_text())["spacings"][1]).all()


def test_plans_with_non_finite_or_degenerate_numbers_are_named():
    from nnfm.errors import DatasetError
    from nnfm.planning.statistics_checks import check_plans

    plans = {"configurations": {"3d_fullres": {
        "patch_size": [32, 64, 48], "median_image_size_in_voxels": [36, 50, 35], "spacing": [1, 1, 1], "batch_size": 2,
        "architecture": {"arch_kwargs": {"input_window": [[-1.2, 2.0], [0.5, 0.5], [float("nan"), 1]]}}}}}
    with pytest.raises(DatasetError) as error:
        check_plans(plans, "3d_fullres", "PLANS.json")
    assert "channel 1: intensity window [0.5, 0.5] has no width" in str(error.value)
    assert "channel 2: intensity window [nan, 1] is not finite" in str(error.value)
    assert "channel 0" not in str(error.value)


# ---- 4. anisotropic data --------------------------------------------------------------------------------------
def thick_slices(step: int = 4, keep: int = 9):
    """edit(): every ``step``-th slice along SimpleITK's z (nnU-Net's first axis), ``keep`` of them: 9 at 4 mm."""
    def thin(image):
        out = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[::step][:keep])
        spacing = list(image.GetSpacing())
        spacing[2] *= step
        out.SetSpacing(spacing)
        out.SetOrigin(image.GetOrigin())
        out.SetDirection(image.GetDirection())
        return out
    return lambda i, images, label: ([thin(im) for im in images], thin(label))


@pytest.mark.e2e
def test_a_thick_slice_mri_warns_which_axis_is_padding_and_the_advised_spacing_fills_the_patch(nnunet_folders,
                                                                                               capsys):
    """MRI with 9 slices at 4 mm: patch [32, 64, 48], 23 of 32 slices padding, no word before issue 30."""
    raw_dataset(nnunet_folders["nnUNet_raw"], 969, ending=".nii.gz", edit=thick_slices())
    plan(969)
    out = capsys.readouterr().out
    assert "WARNING (nnFM): the planned patch [32, 64, 48] is mostly padding" in out
    assert "axis 0 (4 mm): the median image has 9 voxels, the patch 32: 72% of every patch along it is padding" in out
    commands = advised_commands(out)
    assert commands[0] == "nnFM_plan_and_preprocess -d 969 -e anatomix -overwrite_target_spacing 1.125 1 1"
    assert commands[1] == "nnFM_plan_and_preprocess -d 969 -e meddinov3_vitb16"
    assert "nnUNetv2_train 969 2d FOLD -tr nnFMTrainer_MedDINOv3 -p nnFMPlans_meddinov3_vitb16" in out
    result = run_advised(commands[0] + " --no_pp -np 1", dict(os.environ))
    assert "WARNING (nnFM)" not in result.stdout
    planned = json.loads((nnunet_folders["nnUNet_preprocessed"] / "Dataset969_Field" /
                          "nnFMPlans_anatomix.json").read_text())["configurations"]["3d_fullres"]
    assert planned["spacing"][0] == 1.125 and planned["median_image_size_in_voxels"][0] >= planned["patch_size"][0] / 2


def test_a_thick_slice_ct_gets_the_spacing_that_fills_the_patch_in_nnunets_axis_order():
    """CT at 3 x 3 x 12 mm with 8 slices, the slice axis last in the file (transpose puts it first)."""
    from nnfm.planning.patch_padding import padding_warning

    plans = {"transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0], "configurations": {"3d_fullres": {
        "patch_size": [32, 160, 160], "median_image_size_in_voxels": [8, 170, 170], "spacing": [12.0, 3.0, 3.0]}}}
    warning = padding_warning(plans, "3d_fullres", 5, "nnFM_plan_and_preprocess -d 5 -e primus_m -w my.pth")
    assert "axis 0 (12 mm): the median image has 8 voxels, the patch 32: 75% of every patch" in warning
    assert advised_commands(warning)[0] == \
        "nnFM_plan_and_preprocess -d 5 -e primus_m -w my.pth -overwrite_target_spacing 3 3 3"
    plans["configurations"]["3d_fullres"]["median_image_size_in_voxels"] = [17, 170, 170]  # 47% padding: no warning
    assert padding_warning(plans, "3d_fullres", 5, "x") is None


# ---- 3. weights given as a folder ---------------------------------------------------------------------------
def test_a_downloaded_snapshot_folder_with_one_checkpoint_is_planned_and_loaded(nnunet_folders, anatomix_checkpoint,
                                                                                tmp_path, capsys):
    """nnU-Net #2089: 'Checkpoint missing: ... does not exist', though the folder exists."""
    from nnfm.networks import AnatomixSegmentationNetwork
    from nnfm.weights import load_pretrained

    snapshot = tmp_path / "models--neel-dey--anatomix" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "anatomix.pth").write_bytes(anatomix_checkpoint.read_bytes())
    (snapshot / "README.md").write_text("model card")
    (snapshot.parent.parent / ".cache").mkdir()
    (snapshot.parent.parent / ".cache" / "anatomix.pth.lock").write_text("")
    raw_dataset(nnunet_folders["nnUNet_raw"], 970, ending=".nii.gz")
    plan(970, weights=str(snapshot.parent.parent))
    out = capsys.readouterr().out
    assert f"weights folder {snapshot.parent.parent}: using its only checkpoint file {snapshot / 'anatomix.pth'}" in out
    plans = json.loads((nnunet_folders["nnUNet_preprocessed"] / "Dataset970_Field" /
                        "nnFMPlans_anatomix.json").read_text())
    assert plans["configurations"]["3d_fullres"]["nnfm"]["weights"] == str(snapshot / "anatomix.pth")
    report = load_pretrained(AnatomixSegmentationNetwork(1, 3).encoder, str(snapshot))  # nnFM_WEIGHTS=FOLDER
    assert report.ok and report.path == str(snapshot / "anatomix.pth")


def test_a_folder_with_several_checkpoints_lists_them_and_the_advised_one_plans(nnunet_folders, anatomix_checkpoint,
                                                                                tmp_path):
    folder = tmp_path / "downloads"
    (folder / "old").mkdir(parents=True)
    (folder / "anatomix.pth").write_bytes(anatomix_checkpoint.read_bytes())
    (folder / "old" / "anatomix_v0.pt").write_bytes(anatomix_checkpoint.read_bytes())
    raw_dataset(nnunet_folders["nnUNet_raw"], 971, ending=".nii.gz")
    message = refused(971, weights=str(folder))
    assert f"Weights folder {folder} holds 2 checkpoint files; nnFM does not guess" in message
    choices = re.findall(r"^\s+-w (\S+)$", message, re.M)
    assert choices == [str(folder / "anatomix.pth"), str(folder / "old" / "anatomix_v0.pt")]
    assert not (nnunet_folders["nnUNet_preprocessed"] / "Dataset971_Field" / "dataset_fingerprint.json").exists()
    plan(971, weights=choices[0])


# ---- 3. nnFM_extract_features ---------------------------------------------------------------------------------
def _no_compute(monkeypatch):
    import nnfm.features.extract as extract

    def computed(*args, **kwargs):
        raise AssertionError("features were computed")
    monkeypatch.setattr(extract, "sliding_window_features", computed)


def test_extract_features_names_non_finite_voxels_before_computing(tmp_path, monkeypatch):
    """Before: 'channel 0 is constant after preprocessing (nan); there is nothing to normalise' (it is not)."""
    from nnfm.errors import ConfigurationError
    from nnfm.features.extract import extract_features

    _no_compute(monkeypatch)
    image = sitk.ReadImage(str(HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"), sitk.sitkFloat32)
    path = tmp_path / "with_nan.nrrd"
    sitk.WriteImage(with_array(image, set_voxels(((3, 3, slice(0, 5)), np.nan), ((4, 4, 4), np.inf))), str(path))
    with pytest.raises(ConfigurationError) as error:
        extract_features([str(path)], str(tmp_path / "out"), weights="random", device="cpu", progress=False)
    assert f"{path} (channel 0): 5 NaN and 1 Inf of" in str(error.value)
    assert "nothing was computed" in str(error.value) and "Fix: replace them" in str(error.value)


def test_extract_features_refuses_channels_on_different_grids(tmp_path, monkeypatch):
    """Before: nnU-Net's 'Not all input images have the same spacing!' and a bare RuntimeError."""
    from nnfm.errors import ConfigurationError
    from nnfm.features.extract import extract_features

    _no_compute(monkeypatch)
    image = sitk.ReadImage(str(HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"), sitk.sitkFloat32)
    (tmp_path / "in").mkdir()
    sitk.WriteImage(image, str(tmp_path / "in" / "case_0000.nii.gz"))
    image.SetSpacing([1.0, 1.0, 2.5])
    sitk.WriteImage(image, str(tmp_path / "in" / "case_0001.nii.gz"))
    with pytest.raises(ConfigurationError) as error:
        extract_features([str(tmp_path / "in")], str(tmp_path / "out"), weights="random", device="cpu",
                         progress=False)
    assert "the channels of case case are on different voxel grids" in str(error.value)
    assert "spacing [1, 1, 2.5] vs [1, 1, 1] mm" in str(error.value) and "Fix: resample case_0001.nii.gz" in \
        str(error.value)


def _unwritable_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if Path("/sys/fs").is_dir():  # root writes into any mode; sysfs takes no new files, even from root
        return Path("/sys/fs")
    pytest.skip("no folder this (root) process cannot write to")


def test_extract_features_detects_an_unwritable_output_before_computing(tmp_path, monkeypatch):
    """Before: the first image's features computed, then a SimpleITK writer exception."""
    from nnfm.errors import ConfigurationError
    from nnfm.features.extract import extract_features

    _no_compute(monkeypatch)
    out = _unwritable_folder(tmp_path)
    with pytest.raises(ConfigurationError) as error:
        extract_features([str(HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz")], str(out), weights="random",
                         device="cpu", progress=False)
    assert f"cannot write into the output folder {out}" in str(error.value)
    assert "nothing was computed. Fix: choose a folder you can write to (-o)" in str(error.value)


# ---- 5. dense features that do not depend on the file's axis order --------------------------------------------
def _two_orientations(folder: Path):
    """hippocampus_001 as stored (RAS+, direction diag(-1, -1, 1)) and as a copy with its axes permuted and two of
    them flipped (DICOMOrient 'SLP': permutation and flips only, direction and origin updated): the same physical
    image, checked by resampling the copy back onto the original grid voxel for voxel."""
    image = sitk.ReadImage(str(HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"), sitk.sitkFloat32)
    other = sitk.DICOMOrient(image, "SLP")
    assert other.GetSize() != image.GetSize() and other.GetDirection() != image.GetDirection()
    back = sitk.Resample(other, image, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    paths = folder / "as_stored.nii.gz", folder / "permuted_flipped.nii.gz"
    sitk.WriteImage(image, str(paths[0]))
    sitk.WriteImage(other, str(paths[1]))
    return image, other, paths


def _features_on_grid(features_file: Path, reference: sitk.Image) -> np.ndarray:
    """A 4D feature file resampled channel by channel onto ``reference``'s voxel grid by physical position."""
    features = sitk.ReadImage(str(features_file))
    size = list(features.GetSize())
    channels = []
    for c in range(size[3]):
        channel = sitk.Extract(features, size[:3] + [0], [0, 0, 0, c])
        channels.append(sitk.GetArrayFromImage(sitk.Resample(channel, reference, sitk.Transform(), sitk.sitkLinear,
                                                             float("nan"))))
    return np.stack(channels)


def test_features_of_one_image_in_two_axis_orders_agree_in_physical_space(tmp_path):
    """Before: each output in its own image's geometry, but the network saw the arrays in file order: per-channel
    correlation of the same anatomy -0.054 / 0.293 / 0.591 (min / median / max over 16 channels, anatomix's default
    weights). Computed in one canonical orientation (RAS+), measured 1.000 / 1.000 / 1.000."""
    from nnfm.features.extract import extract_features

    image, other, paths = _two_orientations(tmp_path)
    for path in paths:
        extract_features([str(path)], str(tmp_path / path.name[:-7]), tile=(48, 64, 48), device="cpu",
                         progress=False)
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "as_stored" / "as_stored.nii.gz")))
    second_written = sitk.ReadImage(str(tmp_path / "permuted_flipped" / "permuted_flipped.nii.gz"))
    assert second_written.GetSize()[:3] == other.GetSize()  # written in the copy's own geometry
    second = _features_on_grid(tmp_path / "permuted_flipped" / "permuted_flipped.nii.gz", image)
    assert np.isfinite(second).all() and first.shape == second.shape == (16, *image.GetSize()[::-1])
    correlations = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(first, second)]
    assert min(correlations) > 0.99, (f"per-channel correlation min / median / max {min(correlations):.3f} / "
                                      f"{np.median(correlations):.3f} / {max(correlations):.3f}")
    # --file-orientation: the file's own axis order, as before (and as nnUNetv2_predict feeds the network)
    extract_features([str(paths[1])], str(tmp_path / "file_order"), tile=(48, 64, 48), device="cpu", progress=False,
                     file_orientation=True)
    file_order = _features_on_grid(tmp_path / "file_order" / "permuted_flipped.nii.gz", image)
    assert np.median([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(first, file_order)]) < 0.5


def test_every_reader_and_axis_order_gives_the_same_canonical_array(tmp_path):
    """SimpleITKIO and NibabelIO (nnU-Net's readers) of the two files: one canonical array (RAS+ in nnU-Net's axis
    order, as NibabelIOWithReorient reads), the spacing with it, and back to each file's own array exactly."""
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from nnfm.features.extract import from_canonical, to_canonical

    image, _, paths = _two_orientations(tmp_path)
    arrays = []
    for reader in (SimpleITKIO, NibabelIO):
        for path in paths:
            data, properties = reader().read_images([str(path)])
            canonical, spacing, orientation = to_canonical(data, properties)
            arrays.append(canonical)
            assert list(spacing) == [1.0, 1.0, 1.0] and canonical.shape == (1, *image.GetSize()[::-1])
            np.testing.assert_array_equal(from_canonical(canonical, orientation), data)
    for array in arrays[1:]:
        np.testing.assert_array_equal(array, arrays[0])


# ---- 3. one training per fold ---------------------------------------------------------------------------------
def test_fold_guard_refuses_a_live_lock_replaces_a_stale_one_and_guards_a_finished_fold(tmp_path, monkeypatch):
    from nnfm.errors import FoldInUseError
    from nnfm.training.fold_guard import LOCK_FILE, FoldLock, check_fold_free

    argv = ["nnUNetv2_train", "4", "3d_fullres", "0", "-tr", "nnFMTrainer", "-p", "nnFMPlans_anatomix"]
    folder = tmp_path / "fold_0"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder.mkdir()
        (folder / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                    "started": "2026-12-03T10:00:00", "command": "nnUNetv2_train A"}))
        for continuing in (False, True):  # --c does not get past a live run either
            with pytest.raises(FoldInUseError, match=f"is being trained right now by pid {sleeper.pid} on host "):
                check_fold_free(folder, continuing=continuing, argv=argv)
        with pytest.raises(FoldInUseError):
            FoldLock(folder).acquire(argv)
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = FoldLock(folder)  # its process is gone: stale, replaced
    lock.acquire(argv)
    assert lock.replaced["pid"] == sleeper.pid
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (folder / LOCK_FILE).exists()

    (folder / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(FoldInUseError) as error:
        check_fold_free(folder, argv=argv)
    assert advised_commands(str(error.value)) == [
        " ".join(argv) + " --val", " ".join(argv) + " --c", "nnFM_OVERWRITE=1 " + " ".join(argv)]
    assert check_fold_free(folder, continuing=True, argv=argv) is None
    assert check_fold_free(folder, validating=True, argv=argv) is None
    monkeypatch.setenv("nnFM_OVERWRITE", "1")
    assert "training over the finished run" in check_fold_free(folder, argv=argv)


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.time() + seconds
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_the_same_fold_trained_twice_at_once_is_refused_and_a_finished_fold_needs_a_flag(hippocampus, nnunet_env,
                                                                                         tmp_path):
    """nnU-Net #560 / #488: both runs exit 0, the fold keeps the second's model, the first run is lost."""
    results = tmp_path / "results"
    # long enough (5 epochs of 2 iterations, about 8 s each on a 2-core CPU) for a second process to start while
    # the first trains
    env = dict(nnunet_env, nnUNet_results=str(results), nnFM_WEIGHTS="random", nnFM_EPOCHS="5")
    args = ["nnUNetv2_train", hippocampus["id"], "3d_fullres", 0, "-tr", "nnFMTrainer", "-p", "nnFMPlans_anatomix",
            "-device", "cpu"]
    fold = results / hippocampus["name"] / "nnFMTrainer__nnFMPlans_anatomix__3d_fullres" / "fold_0"
    first = subprocess.Popen([str(BIN / "nnUNetv2_train")] + [str(a) for a in args[1:]], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (fold / "nnfm_training.lock").is_file() or first.poll() is not None, 300, "the lock")
        assert first.poll() is None, first.stdout.read()[-3000:]
        second = run_cli(args, env, check=False)
        assert second.returncode != 0
        output = second.stdout + second.stderr
        assert f"FoldInUseError: {fold} is being trained right now by pid {first.pid} on host" in output, output[-3000:]
        assert not list(fold.glob("checkpoint_*.pth")) or first.poll() is None
    finally:
        first_output = first.communicate(timeout=900)[0]
    assert first.returncode == 0, first_output[-3000:]
    assert (fold / "checkpoint_final.pth").is_file() and not (fold / "nnfm_training.lock").exists()
    third = run_cli(args, env, check=False)
    assert third.returncode != 0 and "holds a finished training (checkpoint_final.pth written" in third.stdout + \
        third.stderr
    validate = advised_commands(third.stdout + third.stderr)[0]
    assert validate.endswith("--val")
    before = (fold / "checkpoint_final.pth").stat().st_mtime
    run_advised(validate, env)
    assert (fold / "checkpoint_final.pth").stat().st_mtime == before and (fold / "validation" / "summary.json").is_file()


# ---- 6. validation of a run without checkpoint_final.pth -------------------------------------------------------
def _checkpoint(path: Path, epochs: int, best_ema: float) -> Path:
    """The entries of nnU-Net's save_checkpoint that say what a checkpoint is (its weights do not matter here)."""
    torch.save({"network_weights": {}, "current_epoch": epochs, "_best_ema": best_ema, "init_args": {}}, path)
    return path


NNUNET_VAL = ["/venv/bin/nnUNetv2_train", "4", "3d_fullres", "0", "-tr", "nnFMTrainer", "-p", "nnFMPlans_anatomix",
              "-device", "cpu", "--val", "--val_best"]
PLANS_NAMES = {"plans_name": "nnFMPlans_anatomix", "dataset_name": "Dataset004_Hippocampus"}


def test_val_without_a_final_checkpoint_names_what_is_there_and_the_command_that_validates_it(tmp_path):
    """Before: nnU-Net's 'RuntimeError: Cannot run validation because the training is not finished yet!' after the
    trainer was built, for --val and --val_best alike (maybe_load_checkpoint checks for checkpoint_final.pth first)."""
    from nnfm.errors import MissingCheckpointError
    from nnfm.training.validation import refuse_validation_without_final

    def refusal(folder, argv=NNUNET_VAL):
        return refuse_validation_without_final(folder, "nnFMTrainer", PLANS_NAMES, "3d_fullres", 0, argv)

    fold = tmp_path / "fold_0"
    fold.mkdir()
    with pytest.raises(MissingCheckpointError) as error:
        refusal(fold)
    assert f"{fold} holds no checkpoint: this fold was not trained" in str(error.value)
    assert advised_commands(str(error.value)) == [
        "nnUNetv2_train 4 3d_fullres 0 -tr nnFMTrainer -p nnFMPlans_anatomix -device cpu"]
    _checkpoint(fold / "checkpoint_best.pth", 7, 0.61234)
    _checkpoint(fold / "checkpoint_latest.pth", 9, 0.61234)
    with pytest.raises(MissingCheckpointError) as error:
        refusal(fold)
    message = str(error.value)
    assert f"{fold} has no checkpoint_final.pth: its training stopped before the last epoch" in message
    assert "checkpoint_best.pth (epoch 7, best EMA pseudo Dice 0.6123, written" in message
    assert "checkpoint_latest.pth (epoch 9, best EMA pseudo Dice 0.6123, written" in message
    assert advised_commands(message) == [
        "nnFM_validate 4 3d_fullres 0 -tr nnFMTrainer -p nnFMPlans_anatomix -device cpu",
        "nnUNetv2_train 4 3d_fullres 0 -tr nnFMTrainer -p nnFMPlans_anatomix -device cpu --c"]
    assert refusal(fold, NNUNET_VAL[:-2]) is None  # training, not validating: nnU-Net's --c / the fold guard decide
    _checkpoint(fold / "checkpoint_final.pth", 10, 0.61234)
    assert refusal(fold) is None  # finished: nnU-Net validates it


class _NNUNetTrainerStandIn:
    """The parts of nnUNetTrainer that validation touches: a fold folder, load_checkpoint, the log, and a validation
    that writes nnU-Net's summary.json."""

    def __init__(self, folder: Path):
        self.output_folder, self.local_rank, self.current_epoch = str(folder), 0, 0
        self.log, self.loaded = [], []

    def load_checkpoint(self, filename):
        self.loaded.append(Path(filename).name)
        self.current_epoch = torch.load(filename, weights_only=False)["current_epoch"]

    def print_to_log_file(self, *args, also_print_to_console=False):
        self.log.append(" ".join(str(a) for a in args))

    def run_training(self):
        self.current_epoch = 10
        _checkpoint(Path(self.output_folder) / "checkpoint_final.pth", 10, 0.7)

    def perform_actual_validation(self, save_probabilities=False):
        (Path(self.output_folder) / "validation").mkdir(exist_ok=True)
        (Path(self.output_folder) / "validation" / "summary.json").write_text(json.dumps(
            {"foreground_mean": {"Dice": 0.5}, "mean": {"1": {"Dice": 0.5}}, "metric_per_case": []}))


def _summary(fold: Path) -> dict:
    return json.loads((fold / "validation" / "summary.json").read_text())


def test_nnfm_validate_uses_checkpoint_best_without_a_final_one_and_says_so(tmp_path, monkeypatch):
    import nnunetv2.run.run_training as run_training

    from nnfm.training import validation
    from nnfm.training.validation import RecordsValidatedCheckpoint, main

    class Trainer(RecordsValidatedCheckpoint, _NNUNetTrainerStandIn):
        pass

    fold = tmp_path / "fold_0"
    fold.mkdir()
    built = []

    def get_trainer_from_args(dataset, configuration, fold_number, trainer, plans, continue_training=False,
                              device=None):
        built.append((dataset, configuration, fold_number, trainer, plans, str(device), validation.VALIDATING))
        return Trainer(fold)
    monkeypatch.setattr(run_training, "get_trainer_from_args", get_trainer_from_args)
    _checkpoint(fold / "checkpoint_best.pth", 7, 0.61234)
    args = ["4", "3d_fullres", "0", "-tr", "nnFMTrainer", "-p", "nnFMPlans_anatomix", "-device", "cpu"]
    main(args)
    assert built == [("4", "3d_fullres", 0, "nnFMTrainer", "nnFMPlans_anatomix", "cpu", True)]
    assert not validation.VALIDATING  # only while the trainer is built (its fold guard lets a finished fold validate)
    summary = _summary(fold)
    record = summary["nnfm_validated_checkpoint"]
    assert record["checkpoint"] == "checkpoint_best.pth" and record["epochs_trained"] == 7
    assert record["best_ema_pseudo_dice"] == 0.6123 and "no checkpoint_final.pth in this fold" in record["note"]
    assert "-chk checkpoint_best.pth" in record["note"] and summary["foreground_mean"] == {"Dice": 0.5}

    _checkpoint(fold / "checkpoint_final.pth", 10, 0.7)
    main(args)
    assert _summary(fold)["nnfm_validated_checkpoint"]["checkpoint"] == "checkpoint_final.pth"
    with pytest.raises(SystemExit) as stopped:
        main(args + ["--checkpoint", "latest"])
    assert (f"MissingCheckpointError: {fold} has no checkpoint_latest.pth; it holds checkpoint_final.pth (epoch 10"
            in str(stopped.value)) and str(stopped.value).endswith("Fix: --checkpoint final.")


def test_every_validation_of_an_nnfm_trainer_records_its_checkpoint_in_the_log_and_the_summary(tmp_path):
    """nnU-Net's own flows: the validation after training (the final weights in memory), --val_best (the trainer
    loads checkpoint_best.pth after training). Before: neither the log nor summary.json said which was validated."""
    from nnfm.training.validation import RecordsValidatedCheckpoint

    class Trainer(RecordsValidatedCheckpoint, _NNUNetTrainerStandIn):
        pass

    trainer = Trainer(tmp_path)
    trainer.run_training()
    trainer.perform_actual_validation()
    record = _summary(tmp_path)["nnfm_validated_checkpoint"]
    assert record["checkpoint"] == "checkpoint_final.pth" and record["epochs_trained"] == 10
    assert record["note"] == "the weights at the end of this training (10 epochs)"
    assert trainer.log[-1].startswith("nnFM: validating the weights of checkpoint_final.pth (epoch 10, best EMA")
    trainer.load_checkpoint(str(_checkpoint(tmp_path / "checkpoint_best.pth", 6, 0.8)))  # what --val_best does
    trainer.perform_actual_validation()
    assert _summary(tmp_path)["nnfm_validated_checkpoint"]["checkpoint"] == "checkpoint_best.pth"
    assert trainer.log[-1].startswith("nnFM: validating the weights of checkpoint_best.pth (epoch 6, best EMA")


def test_a_run_without_its_final_checkpoint_is_validated_from_checkpoint_best_by_the_advised_command(
        hippocampus, nnunet_env, tmp_path):
    """A fold whose training stopped before checkpoint_final.pth (here: removed after a 2-epoch run, which leaves
    checkpoint_best.pth as a killed run does). Before: nnUNetv2_train --val --val_best exited with nnU-Net's
    'RuntimeError: Cannot run validation because the training is not finished yet!' and nothing validated it."""
    results = tmp_path / "results"
    env = dict(nnunet_env, nnUNet_results=str(results), nnFM_WEIGHTS="random", nnFM_EPOCHS="2")
    args = ["nnUNetv2_train", hippocampus["id"], "3d_fullres", 0, "-tr", "nnFMTrainer", "-p", "nnFMPlans_anatomix",
            "-device", "cpu"]
    run_cli(args, env)
    fold = results / hippocampus["name"] / "nnFMTrainer__nnFMPlans_anatomix__3d_fullres" / "fold_0"
    (fold / "checkpoint_final.pth").unlink()
    (fold / "validation" / "summary.json").unlink()
    refused_run = run_cli(args + ["--val", "--val_best"], env, check=False)
    output = refused_run.stdout + refused_run.stderr
    assert refused_run.returncode != 0 and f"MissingCheckpointError: {fold} has no checkpoint_final.pth" in output
    assert "Cannot run validation because the training is not finished yet" not in output  # stopped before nnU-Net
    validate = advised_commands(output)[0]
    assert validate == (f"nnFM_validate {hippocampus['id']} 3d_fullres 0 -tr nnFMTrainer -p nnFMPlans_anatomix "
                        f"-device cpu")
    run_advised(validate, env)
    record = json.loads((fold / "validation" / "summary.json").read_text())["nnfm_validated_checkpoint"]
    assert record["checkpoint"] == "checkpoint_best.pth" and 1 <= record["epochs_trained"] <= 2
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "nnFM: validating the weights of checkpoint_best.pth (epoch" in log
    assert not (fold / "checkpoint_final.pth").exists()  # validating does not make the run look finished


# ---- 2. a tiny SSL teacher in ViT-B plans ---------------------------------------------------------------------
def tiny_dino_teacher(path: Path) -> Path:
    """What nnFM_pretrain dino --embed-dim 32 --depth 4 --num-heads 2 exports (MedDINOv3 layout, its convention)."""
    from nnfm.pretraining.dino.backbone import MaskableDinoViT
    from nnfm.pretraining.dino.heads import DINOHead
    from nnfm.pretraining.dino.key_mapping import meddinov3_checkpoint
    from nnfm.weights.input_convention import CONVENTION_KEY

    torch.manual_seed(0)
    backbone = MaskableDinoViT("vit_small_patch16_dinov3", embed_dim=32, depth=4, num_heads=2)
    heads = [DINOHead(32, 16, 32, 8) for _ in range(2)]
    torch.save(dict(meddinov3_checkpoint(backbone, *heads), **{CONVENTION_KEY: "nnunet"}), path)
    return path


def test_a_tiny_dino_teacher_in_vitb_plans_names_the_vit_kwargs_that_fit_it(tmp_path):
    """dinov3#290: 'CheckpointMismatchError ... shape-mismatched 59' and every key, no word on --vit_kwargs."""
    from nnfm.errors import CheckpointMismatchError
    from nnfm.networks.dinov3_segmentation import DINOv3SegmentationNetwork
    from nnfm.registry import get_encoder
    from nnfm.weights import load_pretrained, pretrained_target

    teacher = tiny_dino_teacher(tmp_path / "meddinov3_teacher.pth")
    entry = get_encoder("meddinov3_vitb16")
    vitb = DINOv3SegmentationNetwork(1, 3, **dict(entry.kwargs(), input_norm="nnunet"))
    with pytest.raises(CheckpointMismatchError) as error:
        load_pretrained(pretrained_target(vitb), str(teacher), family=entry.families)
    message = str(error.value)
    assert "the file has embed_dim 32, depth 4, num_heads 2, num_reg_tokens 4, mlp_ratio 4; the network embed_dim " \
           "768, depth 12, num_heads 12" in message
    [command] = advised_commands(message)
    assert command == (f"nnFM_plan_and_preprocess -d DATASET -e ENCODER -w {teacher} --vit_kwargs "
                       "'{\"embed_dim\": 32, \"depth\": 4, \"num_heads\": 2}'")
    assert "... and 49 more" in message  # the key listing is cut short under the advice
    vit_kwargs = json.loads(shlex.split(command)[-1])
    fitted = DINOv3SegmentationNetwork(1, 3, **dict(entry.kwargs(), input_norm="nnunet", vit_kwargs=vit_kwargs))
    assert load_pretrained(pretrained_target(fitted), str(teacher), family=entry.families).ok


def test_the_advised_replanning_for_a_tiny_dino_teacher_trains(hippocampus_converted, nnunet_env, tmp_path):
    """The trainer's words name this dataset, encoder, weights and trainer; pasted, they plan and train."""
    teacher = tiny_dino_teacher(tmp_path / "meddinov3_teacher.pth")
    env = dict(nnunet_env, OMP_NUM_THREADS="1", nnUNet_results=str(tmp_path / "results"))
    dataset = hippocampus_converted["id"]
    run_cli(["nnFM_plan_and_preprocess", "-d", dataset, "-e", "meddinov3_vitb16", "-w", teacher, "-np", 1], env)
    result = run_cli(["nnUNetv2_train", dataset, "2d", 0, "-tr", "nnFMTrainer_MedDINOv3", "-p",
                      "nnFMPlans_meddinov3_vitb16", "-device", "cpu"], env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "CheckpointMismatchError" in output
    commands = advised_commands(output)
    assert commands == [
        f"nnFM_plan_and_preprocess -d {dataset} -e meddinov3_vitb16 -w {teacher} --vit_kwargs "
        "'{\"embed_dim\": 32, \"depth\": 4, \"num_heads\": 2}'",
        f"nnUNetv2_train {dataset} 2d 0 -tr nnFMTrainer_MedDINOv3 -p nnFMPlans_meddinov3_vitb16"], output[-4000:]
    run_advised(commands[0] + " -np 1", env)
    run_advised(commands[1] + " -device cpu", env)
    fold = tmp_path / "results" / hippocampus_converted["name"] / \
        "nnFMTrainer_MedDINOv3__nnFMPlans_meddinov3_vitb16__2d" / "fold_0"
    provenance = json.loads((fold / "nnfm_pretrained.json").read_text())
    assert provenance["weights"] == str(teacher) and provenance["report"]["shape_mismatched"] == []


def test_nnfms_default_refuses_z_score_weights_for_ct_normalisation_before_preprocessing(nnunet_folders):
    """nnFM's default (no -e) plans nnU-Net's own network from weights pretrained on z-scored images; nnU-Net gives a
    CT channel its global clip-and-scale instead, so planning stops with the fix, before any preprocessing; with
    -w random the same dataset plans (nnU-Net's initialisation)."""
    folder = raw_dataset(nnunet_folders["nnUNet_raw"], 975, name="FieldCT")
    meta = json.loads((folder / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    preprocessed = nnunet_folders["nnUNet_preprocessed"] / "Dataset975_FieldCT"
    preprocessed.mkdir(parents=True)
    mine = {"plans_name": "nnUNetPlans", "configurations": {}, "mine": 1}
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(mine))  # the user's own: not replaced by a refusal
    message = refused(975, encoder=None)
    assert "plainconv_unet_synth_nnfm" in message and "CTNormalization" in message and "-w random" in message
    assert not (preprocessed / "nnUNetPlans_3d_fullres").exists()
    assert json.loads((preprocessed / "nnUNetPlans.json").read_text()) == mine
    assert plan(975, encoder=None, weights="random") == "nnUNetPlans"
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    # every 3D configuration records the weights (-w holds for 3d_lowres too), 2d none (3D weights are refused there)
    for name, configuration in plans["configurations"].items():
        three_d = "Conv3d" in str(configuration.get("architecture", {}).get("arch_kwargs", {}).get("conv_op"))
        assert (configuration.get("nnfm", {}).get("weights") == "random") == three_d, name
    assert "nnfm" in plans["configurations"]["3d_fullres"] and "nnfm" not in plans["configurations"]["2d"]
