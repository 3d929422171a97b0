"""Issue 13: five cases where nnFM's integration with nnU-Net broke, each tested as its whole kind.

1. user packages named ``trainers`` / ``planners`` and modules shadowing nnFM's (nnFM_doctor reports, never crashes)
2. nnU-Net's ``-pretrained_weights``: every nnFM network names its per-class layers ``seg_layers``
3. 2D datasets refused by 3D-only encoders, naming the 2D encoders
4. position embeddings resized whenever the token grid's shape differs (grid read from the checkpoint)
5. provenance keyed by fold in the shared plans.json, so predictions do not name another fold's weights
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tool, trainer_in_process
from nnfm.networks.dinov3_segmentation import DINOv3SegmentationNetwork
from nnfm.networks.primus_segmentation import PrimusSegmentationNetwork
from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork
from nnfm.weights import load_pretrained
from nnfm.weights.pos_embed import resize_pos_embed_3d

TINY_PRIMUS = dict(embed_dim=48, depth=4, num_heads=2)
TINY_VIT = dict(vit="vit_small_patch16_dinov3", vit_kwargs={"embed_dim": 32, "depth": 4, "num_heads": 2},
                autocast_dtype=None)


# ---- 1. shadowing --------------------------------------------------------------------------------------------
def _user_packages(root: Path) -> Path:
    """A user's own packages named like nnFM's repository folders: trainers/ (one trainer) and planners/."""
    (root / "trainers").mkdir(parents=True)
    (root / "trainers" / "__init__.py").write_text("")
    (root / "trainers" / "my_trainer.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class MyTrainer(nnUNetTrainer):\n    pass\n")
    (root / "planners").mkdir()
    (root / "planners" / "__init__.py").write_text("")
    (root / "planners" / "plan_and_preprocess.py").write_text("raise ImportError('user planners, not nnFM')\n")
    return root


def _run(args, env, cwd):
    return subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_user_packages_named_trainers_and_planners_do_not_hide_nnfm(tmp_path, nnunet_env):
    user = _user_packages(tmp_path / "user")
    env = dict(nnunet_env, PYTHONPATH=str(user))
    env.pop("nnUNet_extTrainer")  # as in a fresh shell: nnFM registers its trainers itself
    find = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
            "print('FOUND', f('nnFMTrainer').__name__)")
    result = _run([sys.executable, "-c", find], env, tmp_path)
    assert result.returncode == 0 and "FOUND nnFMTrainer" in result.stdout, result.stdout + result.stderr
    found = result.stdout.split("Using trainer 'nnFMTrainer' from: ")[-1].splitlines()[0].strip()
    assert Path(found).name == "nnfm_trainers" and str(user) not in found
    result = _run([tool("nnFM_plan_and_preprocess"), "--help"], env, tmp_path)
    assert result.returncode == 0 and "nnFM_plan_and_preprocess" in result.stdout, result.stderr
    result = _run([tool("nnFM_doctor")], env, tmp_path)
    assert "Traceback" not in result.stderr and result.returncode == 0, result.stdout + result.stderr


def test_doctor_reports_a_shadowed_nnfm_package_instead_of_crashing(tmp_path, nnunet_env):
    shadow = tmp_path / "shadow"
    (shadow / "nnfm_trainers").mkdir(parents=True)
    (shadow / "nnfm_trainers" / "__init__.py").write_text("")  # no TRAINERS_DIR: the old doctor's ImportError
    result = _run([tool("nnFM_doctor")], dict(nnunet_env, PYTHONPATH=str(shadow)), tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert f"FIX   'nnfm_trainers' resolves to {shadow / 'nnfm_trainers'}" in result.stdout


def test_doctor_reports_ext_trainer_modules_named_like_nnfms(tmp_path, nnunet_env):
    mine = tmp_path / "my_trainers"
    mine.mkdir()
    (mine / "nnfm_trainer.py").write_text("# a user's module that happens to share nnFM's module name\n")
    env = dict(nnunet_env, nnUNet_extTrainer=os.pathsep.join([str(mine), nnunet_env["nnUNet_extTrainer"]]))
    result = _run([tool("nnFM_doctor")], env, tmp_path)
    assert "Traceback" not in result.stderr and result.returncode == 1
    assert f"folder {mine} has module(s) named like nnFM's trainer modules (nnfm_trainer)" in result.stdout


# ---- 2. seg_layers (unit) ----------------------------------------------------------------------------------------
NETWORKS = {
    "anatomix": lambda classes: AnatomixSegmentationNetwork(1, classes),
    "primus": lambda classes: PrimusSegmentationNetwork(1, classes, input_shape=(16, 16, 16), **TINY_PRIMUS),
    "vit2d": lambda classes: DINOv3SegmentationNetwork(1, classes, **TINY_VIT),
}
# the names these networks gave their per-class layers before issue 13
OLD_NAMES = {"anatomix": ("decoder.seg_layers.", "decoder.heads."),
             "primus": ("decoder.seg_layers.0.", "decoder.decode.3."),
             "vit2d": ("decoder.seg_layers.0.", "decoder.decode.4.")}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_per_class_layer_is_a_seg_layer_as_nnunet_pretrained_weights_expects(name):
    three, five = NETWORKS[name](3).state_dict(), NETWORKS[name](5).state_dict()
    assert three.keys() == five.keys()
    per_class = {k for k in three if three[k].shape != five[k].shape}
    assert per_class and per_class == {k for k in three if ".seg_layers." in k}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_checkpoints_with_the_old_head_names_still_load(name):
    source = NETWORKS[name](3)
    new, old = OLD_NAMES[name]
    old_state = {k.replace(new, old): v for k, v in source.state_dict().items()}
    assert any(k.startswith(old) for k in old_state)
    target = NETWORKS[name](3)
    target.load_state_dict(old_state, strict=True)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())


def test_pretrained_weights_flag_is_read_as_nnunets_parser_reads_it():
    from nnfm.weights.nnunet_pretrained import pretrained_weights_argument as flag

    assert flag(["4", "3d_fullres", "0", "-tr", "nnFMTrainer", "-p", "nnFMPlans_anatomix"]) is None  # -p is plans
    assert flag(["4", "3d_fullres", "0", "-p", "P", "-pretrained_weights", "a.pth"]) == "a.pth"
    assert flag(["-pretrained_weights=b.pth"]) == "b.pth" and flag(["-pretr", "c.pth"]) == "c.pth"


# ---- 4. position embeddings on a grid of the same token count, another shape ----------------------------------
def _grid_pattern(grid, dim):
    """(1, prod(grid), dim): channel a holds the token's coordinate along axis a (a < 3), row-major order."""
    coordinates = torch.stack(torch.meshgrid(*[torch.arange(g, dtype=torch.float32) for g in grid], indexing="ij"))
    pattern = torch.zeros(*grid, dim)
    pattern[..., :3] = coordinates.permute(1, 2, 3, 0)
    return pattern.reshape(1, -1, dim)


def test_pos_embed_is_resized_when_the_grid_shape_differs_at_the_same_token_count(tmp_path):
    source = PrimusSegmentationNetwork(1, 3, input_shape=(40, 56, 40), **TINY_PRIMUS)  # grid 5x7x5
    with torch.no_grad():
        source.encoder.eva.pos_embed.copy_(_grid_pattern([5, 7, 5], TINY_PRIMUS["embed_dim"]))
    plans = {"configurations": {"3d_fullres": {"patch_size": [40, 56, 40], "architecture": {
        "network_class_name": "nnfm.networks.primus_segmentation.PrimusSegmentationNetwork",
        "arch_kwargs": {"input_shape": [40, 56, 40]}}}}}
    path = tmp_path / "checkpoint_final.pth"  # as nnU-Net saves a fold of nnFMTrainer_PrimusTiny
    torch.save({"network_weights": source.state_dict(), "trainer_name": "nnFMTrainer_PrimusTiny",
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0}}, path)
    target = PrimusSegmentationNetwork(1, 2, input_shape=(56, 40, 40), **TINY_PRIMUS)  # grid 7x5x5, 175 tokens too
    report = load_pretrained(target.encoder, path, family="nnssl_primus")
    assert "5x7x5 -> 7x5x5" in report.adapted["eva.pos_embed"]
    loaded = target.encoder.eva.pos_embed.detach()
    assert torch.equal(loaded, resize_pos_embed_3d(source.encoder.eva.pos_embed.detach(), [5, 7, 5], [7, 5, 5]))
    grid = loaded.reshape(7, 5, 5, -1)
    for axis in range(3):  # each coordinate channel varies along its own axis only, increasing
        channel = grid[..., axis]
        others = [a for a in range(3) if a != axis]
        assert torch.allclose(channel, channel.mean(dim=others, keepdim=True).expand_as(channel), atol=1e-5)
        profile = channel.mean(dim=others)
        assert torch.all(profile[1:] > profile[:-1])


def test_nnssl_pretraining_grid_comes_from_its_adaptation_plan(tmp_path):
    from nnfm.networks.primus_segmentation import PrimusEncoder

    encoder = PrimusEncoder(1, [16, 24, 32], **TINY_PRIMUS)  # a non-cubic 2x3x4 pretraining grid
    plan = {"key_to_encoder": "eva", "key_to_stem": "down_projection", "key_to_lpe": "eva.pos_embed",
            "pretrain_plan": {"configurations": {"onemmiso": {"patch_size": [16, 24, 32]}}},
            "recommended_downstream_patchsize": [160, 160, 160]}
    path = tmp_path / "nnssl.pth"
    torch.save({"network_weights": encoder.state_dict(), "nnssl_adaptation_plan": plan}, path)
    target = PrimusSegmentationNetwork(1, 2, input_shape=(32, 24, 16), **TINY_PRIMUS)  # 4x3x2, 24 tokens
    report = load_pretrained(target.encoder, path, family="nnssl_primus")
    assert "2x3x4 -> 4x3x2" in report.adapted["eva.pos_embed"]


# ---- 3. 2D data with a 3D-only encoder ---------------------------------------------------------------------------
def test_3d_only_encoders_refuse_a_png_dataset_and_name_the_2d_encoders(hippocampus, nnunet_env):
    import numpy as np
    import SimpleITK as sitk

    from nnfm.errors import ConfigurationError
    from nnfm.registry import encoders
    from nnfm_planners.dimensionality import refuse_2d_dataset_for_3d_encoder

    dataset = Path(nnunet_env["nnUNet_raw"]) / "Dataset996_HippoPNG"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "labelsTr").mkdir()
    count = 0
    for case in hippocampus["train"][:2]:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(hippocampus["raw"] / "imagesTr" / f"{case}_0000.nii.gz")))
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(hippocampus["raw"] / "labelsTr" / f"{case}.nii.gz")))
        middle = image.shape[0] // 2
        for z in range(middle - 2, middle + 2):
            scaled = (255 * (image[z] - image.min()) / max(1e-6, float(image.max() - image.min()))).astype(np.uint8)
            sitk.WriteImage(sitk.GetImageFromArray(scaled), str(dataset / "imagesTr" / f"slice_{count:03d}_0000.png"))
            sitk.WriteImage(sitk.GetImageFromArray(label[z].astype(np.uint8)),
                            str(dataset / "labelsTr" / f"slice_{count:03d}.png"))
            count += 1
    (dataset / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": count, "file_ending": ".png"}))
    two_d = [e.name for e in encoders("2d")]
    three_d = [e.name for e in encoders("3d_fullres")]
    # the command, for one encoder: a short error, no traceback, no plans
    result = run_cli(["nnFM_plan_and_preprocess", "-d", 996, "-e", three_d[0], "-np", 1, "--no_pp"], nnunet_env,
                     check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert "dataset is 2D" in output and f"encoder {three_d[0]!r} is a 3D network" in output
    assert all(f"-e {e}" in output for e in two_d)
    preprocessed = Path(nnunet_env["nnUNet_preprocessed"]) / "Dataset996_HippoPNG"
    assert not (preprocessed / f"nnFMPlans_{three_d[0]}.json").exists()
    # nnFM's default (no -e): the message names no encoder the user did not ask for, and the 2D ways out
    result = run_cli(["nnFM_plan_and_preprocess", "-d", 996, "-np", 1, "--no_pp"], nnunet_env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output and "is a 3D network" not in output, output[-3000:]
    assert "dataset 996 is 2D" in output and "nnUNetv2_plan_and_preprocess -d 996" in output and "-e dinov3" in output
    assert not (preprocessed / "nnUNetPlans.json").exists()
    # every 3D encoder: the check that command runs before planning (on the fingerprint it has just made)
    fingerprint = json.loads((preprocessed / "dataset_fingerprint.json").read_text())
    for encoder in three_d:
        with pytest.raises(ConfigurationError) as refused:
            refuse_2d_dataset_for_3d_encoder(fingerprint, json.loads((dataset / "dataset.json").read_text()), encoder)
        message = str(refused.value)
        assert "dataset is 2D" in message and f"encoder {encoder!r} is a 3D network" in message
        assert all(f"-e {e}" in message for e in two_d)


def test_trainers_refuse_a_configuration_of_the_other_dimensionality():
    from nnfm.errors import ConfigurationError
    from nnfm_planners.dimensionality import check_network_fits_patch

    with pytest.raises(ConfigurationError, match=r"3D network.*'2d' has a 2D patch.*nnFMTrainer_MedDINOv3"):
        check_network_fits_patch(NETWORKS["anatomix"](3), [64, 48], "2d")  # e.g. -p nnUNetPlans -c 2d
    with pytest.raises(ConfigurationError, match=r"2D network.*3D patch.*nnFMTrainer_PrimusTiny"):
        check_network_fits_patch(NETWORKS["vit2d"](3), [32, 64, 48], "3d_fullres")
    check_network_fits_patch(NETWORKS["anatomix"](3), [32, 64, 48], "3d_fullres")


# ---- 2 and 5 through nnUNetv2_train / nnUNetv2_predict -----------------------------------------------------------
PLANS = "nnFMPlans_anatomix"


@pytest.fixture(scope="module")
def one_class_checkpoint(hippocampus, tmp_path_factory) -> Path:
    """A checkpoint as nnU-Net saves one of nnFMTrainer on these plans for one foreground class (anterior and
    posterior merged): the same network with 2 output channels instead of 3. -pretrained_weights reads
    network_weights only; the rest is what nnU-Net's save_checkpoint writes beside them."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnfm_trainers.nnfm_trainer import nnFMTrainer

    plans = PlansManager(hippocampus["plans"])
    network = nnFMTrainer.build_network_architecture(plans, plans.get_configuration("3d_fullres"), 1, 2)
    path = tmp_path_factory.mktemp("one_class") / "checkpoint_final.pth"
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnFMTrainer", "current_epoch": 1,
                "init_args": {"plans": hippocampus["plans"], "configuration": "3d_fullres", "fold": 0}}, path)
    return path


@pytest.fixture(scope="module")
def two_folds(trained_anatomix, one_class_checkpoint, hippocampus, nnunet_env, anatomix_checkpoint):
    """One model folder, two folds from different weights: fold 0 is the shared model (nnFM_WEIGHTS), fold 1
    is fine-tuned with nnU-Net's -pretrained_weights from the one-class checkpoint (nnFM_WEIGHTS set too: the
    flag wins)."""
    result = run_cli(["nnUNetv2_train", hippocampus["id"], "3d_fullres", 1, "-tr", "nnFMTrainer", "-p", PLANS,
                      "-device", "cpu", "-pretrained_weights", one_class_checkpoint],
                     dict(nnunet_env, nnFM_WEIGHTS=str(anatomix_checkpoint)))
    return {"model": trained_anatomix["model"], "stdout": result.stdout,
            "weights": {0: str(trained_anatomix["weights"]), 1: str(one_class_checkpoint)}}


def test_predictions_of_fold_0_do_not_name_fold_1s_weights(two_folds, hippocampus, nnunet_env, tmp_path):
    model = two_folds["model"]
    sha = {fold: hashlib.sha256(Path(weights).read_bytes()).hexdigest()
           for fold, weights in two_folds["weights"].items()}
    assert sha[0] != sha[1]
    for fold, weights in two_folds["weights"].items():
        own = json.loads((model / f"fold_{fold}" / "nnfm_pretrained.json").read_text())
        assert own["weights"] == weights and own["fold"] == fold
        checkpoint = torch.load(model / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                                weights_only=False)
        saved = checkpoint["init_args"]["plans"]["configurations"]["3d_fullres"]["nnfm"]
        assert saved["provenance"]["weights"] == weights and set(saved["provenance_by_fold"]) == {str(fold)}
    shared = json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"]["nnfm"]
    assert "provenance" not in shared
    assert {fold: shared["provenance_by_fold"][str(fold)]["sha256"] for fold in (0, 1)} == sha

    images, predictions = tmp_path / "images", tmp_path / "predictions"
    images.mkdir()
    shutil.copy(hippocampus["raw"] / "imagesTr" / f"{hippocampus['test'][0]}_0000.nii.gz", images)
    # --disable_tta: the plans written beside the predictions are under test, not test-time mirroring
    run_cli(["nnUNetv2_predict", "-i", images, "-o", predictions, "-d", hippocampus["id"], "-c", "3d_fullres", "-tr",
             "nnFMTrainer", "-p", PLANS, "-f", 0, "-device", "cpu", "-npp", 0, "-nps", 0, "--disable_tta"], nnunet_env)
    written = json.loads((predictions / "plans.json").read_text())["configurations"]["3d_fullres"]["nnfm"]
    assert "provenance" not in written and written["provenance_by_fold"]["0"]["weights"] == two_folds["weights"][0]


def test_nnunet_pretrained_weights_fine_tunes_to_another_label_count(two_folds, one_class_checkpoint):
    assert "Loading pretrained weights from file" in two_folds["stdout"]
    source = torch.load(one_class_checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    assert source["decoder.seg_layers.0.weight"].shape[0] == 2  # 1 foreground class -> Hippocampus' 2
    folder = two_folds["model"] / "fold_1"
    checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 1
    assert checkpoint["network_weights"]["decoder.seg_layers.0.weight"].shape[0] == 3
    own = json.loads((folder / "nnfm_pretrained.json").read_text())
    assert own["weights"] == str(one_class_checkpoint)
    assert own["sha256"] == hashlib.sha256(one_class_checkpoint.read_bytes()).hexdigest()
    assert "-pretrained_weights" in own["via"]


def test_nnunet_pretrained_weights_of_another_architecture_is_a_short_clear_error(hippocampus, nnunet_env, tmp_path,
                                                                                   monkeypatch):
    """Checked in process, where nnUNetv2_train checks it: its maybe_load_checkpoint, before any training."""
    from nnunetv2.run.run_training import maybe_load_checkpoint

    from nnfm.errors import CheckpointMismatchError
    from nnfm_trainers.nnfm_trainer import nnFMTrainer

    other = PrimusSegmentationNetwork(1, 3, input_shape=(16, 16, 16), **TINY_PRIMUS)
    path = tmp_path / "primus_checkpoint_final.pth"
    torch.save({"network_weights": other.state_dict(), "trainer_name": "nnFMTrainer_PrimusTiny"}, path)
    trainer = trainer_in_process(nnFMTrainer, hippocampus, nnunet_env, monkeypatch, tmp_path / "results",
                                 argv=("-device", "cpu", "-pretrained_weights", str(path)), nnFM_WEIGHTS="random")
    # a CheckpointMismatchError, not the AssertionError of nnU-Net's own load_pretrained_weights
    with pytest.raises(CheckpointMismatchError) as refused:
        maybe_load_checkpoint(trainer, False, False, str(path))
    message = str(refused.value)
    assert f"-pretrained_weights {path} (trained with nnFMTrainer_PrimusTiny" in message
    assert "does not fit AnatomixSegmentationNetwork" in message and f"nnFM_WEIGHTS={path}" in message
    assert "tensor(" not in message
    assert not list(Path(trainer.output_folder).glob("checkpoint_*.pth"))
