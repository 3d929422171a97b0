"""Bad input fails early, before any training step, with an error that names the problem and the fix."""
import json

import pytest
import torch

from conftest import LAYOUTS, random_state_dict_from_layout, run_cli
from nnfm.errors import ConfigurationError, PatchSizeError

PLANS = "nnFMPlans_anatomix"


def _train(hippocampus, env, trainer="nnFMTrainer"):
    return run_cli(["nnUNetv2_train", hippocampus["id"], "3d_fullres", 0, "-tr", trainer, "-p", PLANS,
                    "-device", "cpu"], env, check=False)


def _assert_failed_before_training(result, hippocampus, message, trainer="nnFMTrainer"):
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    folder = hippocampus["results"] / f"{trainer}__{PLANS}__3d_fullres" / "fold_0"
    assert not list(folder.glob("checkpoint_*.pth"))
    assert "Epoch 0" not in "".join(p.read_text() for p in folder.glob("training_log_*.txt"))


def _write(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return path


# channel mismatches that cannot be adapted are covered in test_weights_loading.py (the same load path):
# Hippocampus has one channel, and any stem can be summed down to one
@pytest.mark.parametrize("case", ["missing", "truncated", "wrong_family", "shape_mismatch"])
def test_bad_checkpoints_stop_training_before_the_first_step(case, hippocampus, nnunet_env, anatomix_checkpoint,
                                                             tmp_path):
    if case == "missing":
        path, message = tmp_path / "does_not_exist.pth", "does_not_exist.pth"
    elif case == "truncated":
        data = anatomix_checkpoint.read_bytes()
        path, message = tmp_path / "truncated.pth", "CheckpointCorruptError"
        path.write_bytes(data[: len(data) // 2])
    elif case == "wrong_family":
        path = _write(tmp_path, "dinov3.pth", random_state_dict_from_layout(LAYOUTS / "dinov3_vits16.json"))
        message = "WrongCheckpointFamilyError"
    else:
        state = random_state_dict_from_layout(LAYOUTS / "anatomix_unet.json")
        state["model.38.weight"] = torch.zeros(128, 300, 3, 3, 3)
        path, message = _write(tmp_path, "bad_shape.pth", state), "model.38.weight"
    result = _train(hippocampus, dict(nnunet_env, nnFM_WEIGHTS=str(path)))
    _assert_failed_before_training(result, hippocampus, message)


def test_unavailable_registry_weights_say_where_to_put_the_file(hippocampus, nnunet_env, tmp_path):
    env = dict(nnunet_env, nnFM_WEIGHTS="anatomix", nnFM_weights_cache=str(tmp_path / "cache"))
    result = _train(hippocampus, env)
    _assert_failed_before_training(result, hippocampus, str(tmp_path / "cache"))


def test_unset_nnunet_paths_are_named_with_the_export_line(monkeypatch):
    from nnfm.paths import require_nnunet_paths
    from nnfm_planners.plan_and_preprocess import plan_and_preprocess

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="export nnUNet_raw="):
        require_nnunet_paths()
    with pytest.raises(ConfigurationError, match="nnUNet_preprocessed"):
        plan_and_preprocess(4)


def test_trainer_refuses_unset_results_folder(hippocampus, monkeypatch):
    from nnfm_trainers.nnfm_trainer import nnFMTrainer

    monkeypatch.setenv("nnUNet_preprocessed", str(hippocampus["preprocessed"].parent))
    monkeypatch.delenv("nnUNet_results", raising=False)
    dataset_json = json.loads((hippocampus["preprocessed"] / "dataset.json").read_text())
    plans = dict(hippocampus["plans"], continue_training=False)
    with pytest.raises(ConfigurationError, match="nnUNet_results"):
        nnFMTrainer(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))


def test_patch_not_divisible_by_stride_is_refused_at_initialize(hippocampus, nnunet_env, monkeypatch, tmp_path):
    from nnfm_trainers.nnfm_trainer_variants import nnFMTrainer_scratch

    for key in ("nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.setenv(key, nnunet_env[key])
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    plans = json.loads(json.dumps(hippocampus["plans"]))
    plans["configurations"]["3d_fullres"]["patch_size"] = [40, 56, 40]
    plans["continue_training"] = False
    dataset_json = json.loads((hippocampus["preprocessed"] / "dataset.json").read_text())
    trainer = nnFMTrainer_scratch(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    with pytest.raises(PatchSizeError, match=r"\[40, 56, 40\].*divisible by 16"):
        trainer.initialize()
