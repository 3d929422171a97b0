"""End to end on real MRI through nnU-Net's own CLIs: train, predict, evaluate, resume, ensemble.

The trained model these tests share is conftest's ``trained_anatomix`` (nnFMTrainer, fold 0, pretrained)."""
import hashlib
import json
import shutil

import pytest
import torch

from conftest import run_cli

PLANS = "nnFMPlans_anatomix"


def _output_folder(hippocampus, trainer, plans=PLANS):
    return hippocampus["results"] / f"{trainer}__{plans}__3d_fullres" / "fold_0"


def test_planner_plans_a_patch_the_pretrained_network_can_take(hippocampus):
    config = hippocampus["plans"]["configurations"]["3d_fullres"]
    assert all(p % 16 == 0 and p >= 32 for p in config["patch_size"])
    assert config["batch_size"] >= 2
    assert config["architecture"]["network_class_name"].endswith("AnatomixSegmentationNetwork")
    (lower, upper), = config["architecture"]["arch_kwargs"]["input_window"]
    assert lower < 0 < upper  # z-scored MRI: the window brackets the mean
    assert config["normalization_schemes"] == ["ZScoreNormalization"]  # nnU-Net's own choice is kept


def test_train_with_pretrained_weights_records_provenance(trained_anatomix, anatomix_checkpoint):
    folder = trained_anatomix["fold_0"]
    assert (folder / "checkpoint_final.pth").is_file()
    provenance = json.loads((folder / "nnfm_pretrained.json").read_text())
    sha = hashlib.sha256(anatomix_checkpoint.read_bytes()).hexdigest()
    assert provenance["sha256"] == sha
    assert provenance["report"]["missing"] == [] and provenance["report"]["unexpected"] == []
    assert len(provenance["report"]["loaded"]) == 115
    plans = json.loads((folder.parent / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["nnfm"]["provenance_by_fold"]["0"]["sha256"] == sha
    checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["init_args"]["plans"]["configurations"]["3d_fullres"]["nnfm"]["provenance"]["sha256"] == sha
    assert checkpoint["trainer_name"] == "nnFMTrainer"
    log = "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    assert "nnFM pretrained weights" in log and "Epoch 0" in log


def test_predict_held_back_cases_and_evaluate_with_nnunet(trained_anatomix, hippocampus, nnunet_env, tmp_path):
    images, labels, predictions = tmp_path / "images", tmp_path / "labels", tmp_path / "predictions"
    images.mkdir()
    labels.mkdir()
    for case in hippocampus["test"]:
        shutil.copy(hippocampus["raw"] / "imagesTr" / f"{case}_0000.nii.gz", images)
        shutil.copy(hippocampus["raw"] / "labelsTr" / f"{case}.nii.gz", labels)
    run_cli(["nnUNetv2_predict", "-i", images, "-o", predictions, "-d", hippocampus["id"], "-c", "3d_fullres",
             "-tr", "nnFMTrainer", "-p", PLANS, "-f", 0, "-device", "cpu", "-npp", 1, "-nps", 1], nnunet_env)
    assert sorted(p.name for p in predictions.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in hippocampus["test"])
    # provenance travels with the predictions (nnU-Net copies plans.json next to them)
    plans = json.loads((predictions / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["nnfm"]["provenance_by_fold"]["0"]["weights"]
    run_cli(["nnUNetv2_evaluate_folder", labels, predictions, "-djfile", predictions / "dataset.json",
             "-pfile", predictions / "plans.json"], nnunet_env)
    summary = json.loads((predictions / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}
    assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0
    import SimpleITK as sitk
    for case in hippocampus["test"]:
        predicted = sitk.ReadImage(str(predictions / f"{case}.nii.gz"))
        reference = sitk.ReadImage(str(labels / f"{case}.nii.gz"))
        assert predicted.GetSize() == reference.GetSize()
        assert predicted.GetSpacing() == pytest.approx(reference.GetSpacing())


def test_resume_continues_from_checkpoint_without_the_pretrained_file(trained_anatomix, hippocampus, nnunet_env,
                                                                      tmp_path):
    # the shared model's first epoch, copied to private results so that the shared model stays as it is
    results = tmp_path / "results"
    model = results / hippocampus["name"] / trained_anatomix["model"].name
    model.mkdir(parents=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy(trained_anatomix["model"] / name, model)
    shutil.copytree(trained_anatomix["fold_0"], model / "fold_0")
    folder = model / "fold_0"
    first = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert first["current_epoch"] == 1
    weights = trained_anatomix["weights"]
    hidden = weights.with_name(weights.name + ".hidden")
    weights.rename(hidden)  # a resumed run must not need the pretrained file any more
    try:
        run_cli(["nnUNetv2_train", hippocampus["id"], "3d_fullres", 0, "-tr", "nnFMTrainer", "-p", PLANS,
                 "-device", "cpu", "--c"],
                dict(nnunet_env, nnUNet_results=str(results), nnFM_WEIGHTS=str(weights), nnFM_EPOCHS="2"))
    finally:
        hidden.rename(weights)
    second = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert second["current_epoch"] == 2
    # the first epoch's log survives and the second epoch was added
    losses = second["logging"]["train_losses"]
    assert len(losses) == 2 and losses[0] == pytest.approx(first["logging"]["train_losses"][0])
    # provenance of the original pretrained weights is kept across the resume
    provenance = second["init_args"]["plans"]["configurations"]["3d_fullres"]["nnfm"]["provenance"]
    assert provenance["weights"] == str(weights)
    # weights changed in the resumed epoch, starting from the saved ones
    changed = [k for k in first["network_weights"] if k.endswith("weight") and
               not torch.equal(first["network_weights"][k], second["network_weights"][k])]
    assert changed


def test_scratch_trainer_on_plain_nnunet_plans(hippocampus, nnunet_env):
    """nnFMTrainer runs on nnU-Net's own plans too: the network pads nnU-Net's patch to its stride."""
    run_cli(["nnUNetv2_plan_and_preprocess", "-d", hippocampus["id"], "-c", "3d_fullres", "-np", 1], nnunet_env)
    plans = json.loads((hippocampus["preprocessed"] / "nnUNetPlans.json").read_text())
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    assert any(p % 16 for p in patch), f"expected an nnU-Net patch not divisible by 16, got {patch}"
    run_cli(["nnUNetv2_train", hippocampus["id"], "3d_fullres", 0, "-tr", "nnFMTrainer_scratch", "-p",
             "nnUNetPlans", "-device", "cpu"], nnunet_env)
    folder = _output_folder(hippocampus, "nnFMTrainer_scratch", "nnUNetPlans")
    assert (folder / "checkpoint_final.pth").is_file()
    assert json.loads((folder / "nnfm_pretrained.json").read_text())["weights"] is None


def test_find_best_configuration_and_ensemble_on_nnfm_results(trained_anatomix, hippocampus, nnunet_env, tmp_path):
    # a second model to ensemble with the shared one; --npz: find_best_configuration ensembles validation probabilities
    run_cli(["nnUNetv2_train", hippocampus["id"], "3d_fullres", 0, "-tr", "nnFMTrainer_scratch", "-p", PLANS,
             "-device", "cpu", "--npz"], nnunet_env)
    result = run_cli(["nnUNetv2_find_best_configuration", hippocampus["id"], "-c", "3d_fullres", "-tr",
                      "nnFMTrainer", "nnFMTrainer_scratch", "-p", PLANS, "-f", 0, "-np", 1], nnunet_env)
    info = json.loads((hippocampus["results"] / "inference_information.json").read_text())
    assert "best_model_or_ensemble" in info
    assert "nnFMTrainer" in result.stdout
    images = tmp_path / "images"
    images.mkdir()
    for case in hippocampus["test"]:
        shutil.copy(hippocampus["raw"] / "imagesTr" / f"{case}_0000.nii.gz", images)
    folders = []
    for trainer in ("nnFMTrainer", "nnFMTrainer_scratch"):
        folders.append(tmp_path / trainer)
        # --disable_tta: ensembling is under test here, not test-time mirroring (8 passes per case on the CPU);
        # test_predict_held_back_cases_and_evaluate_with_nnunet predicts with it
        run_cli(["nnUNetv2_predict", "-i", images, "-o", folders[-1], "-d", hippocampus["id"], "-c", "3d_fullres",
                 "-tr", trainer, "-p", PLANS, "-f", 0, "-device", "cpu", "-npp", 0, "-nps", 0,
                 "--save_probabilities", "--disable_tta"], nnunet_env)
    ensembled = tmp_path / "ensemble"
    run_cli(["nnUNetv2_ensemble", "-i", *folders, "-o", ensembled, "-np", 1], nnunet_env)
    assert sorted(p.name for p in ensembled.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in hippocampus["test"])
