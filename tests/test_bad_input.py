"""Bad input fails early, before any training step, with an error that names the problem and the fix."""
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import LAYOUTS, random_state_dict_from_layout, run_cli, trainer_in_process
from nnfm.errors import (CheckpointCorruptError, CheckpointMismatchError, ConfigurationError, PatchSizeError,
                         WeightsUnavailableError, WrongCheckpointFamilyError)

PLANS = "nnFMPlans_anatomix"


def _write(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _bad_checkpoint(case, tmp_path, anatomix_checkpoint):
    """(file, the error the trainer raises, a text the error names) for each kind of bad checkpoint."""
    if case == "missing":
        return tmp_path / "does_not_exist.pth", WeightsUnavailableError, "does_not_exist.pth"
    if case == "truncated":
        data = anatomix_checkpoint.read_bytes()
        path = tmp_path / "truncated.pth"
        path.write_bytes(data[: len(data) // 2])
        return path, CheckpointCorruptError, "truncated.pth"
    if case == "wrong_family":
        path = _write(tmp_path, "dinov3.pth", random_state_dict_from_layout(LAYOUTS / "dinov3_vits16.json"))
        return path, WrongCheckpointFamilyError, "dinov3_vit"
    state = random_state_dict_from_layout(LAYOUTS / "anatomix_unet.json")
    state["model.38.weight"] = torch.zeros(128, 300, 3, 3, 3)
    return _write(tmp_path, "bad_shape.pth", state), CheckpointMismatchError, "model.38.weight"


def _assert_nothing_trained(folder):
    assert not list(folder.glob("checkpoint_*.pth"))
    assert "Epoch 0" not in "".join(p.read_text() for p in folder.glob("training_log_*.txt"))


def _train_in_process(hippocampus, nnunet_env, monkeypatch, results, error, message, **env):
    """nnU-Net's own training loop (run_training) in this process: it must stop in initialize, before any step."""
    from nnfm_trainers.nnfm_trainer import nnFMTrainer

    trainer = trainer_in_process(nnFMTrainer, hippocampus, nnunet_env, monkeypatch, results, **env)
    with pytest.raises(error, match=re.escape(message)):
        trainer.run_training()
    _assert_nothing_trained(Path(trainer.output_folder))


# the loader's own tests (test_weights_loading.py) check each refusal in detail; these check that the trainer
# stops with it before the first step. Channel mismatches that cannot be adapted are covered there too:
# Hippocampus has one channel, and any stem can be summed down to one
@pytest.mark.parametrize("case", ["missing", "truncated", "wrong_family", "shape_mismatch"])
def test_bad_checkpoints_stop_training_before_the_first_step(case, hippocampus, nnunet_env, anatomix_checkpoint,
                                                             monkeypatch, tmp_path):
    path, error, message = _bad_checkpoint(case, tmp_path, anatomix_checkpoint)
    _train_in_process(hippocampus, nnunet_env, monkeypatch, tmp_path / "results", error, message,
                      nnFM_WEIGHTS=str(path))


def test_unavailable_registry_weights_say_where_to_put_the_file(hippocampus, nnunet_env, monkeypatch, tmp_path):
    _train_in_process(hippocampus, nnunet_env, monkeypatch, tmp_path / "results", WeightsUnavailableError,
                      str(tmp_path / "cache"), nnFM_WEIGHTS="anatomix", nnFM_weights_cache=str(tmp_path / "cache"))


def test_nnunetv2_train_stops_on_a_bad_checkpoint_before_the_first_step(hippocampus, nnunet_env, anatomix_checkpoint,
                                                                        tmp_path):
    """The end-to-end representative of the in-process checks above: the command exits with the named error."""
    path, error, message = _bad_checkpoint("wrong_family", tmp_path, anatomix_checkpoint)
    results = tmp_path / "results"
    result = run_cli(["nnUNetv2_train", hippocampus["id"], "3d_fullres", 0, "-tr", "nnFMTrainer", "-p", PLANS,
                      "-device", "cpu"], dict(nnunet_env, nnFM_WEIGHTS=str(path), nnUNet_results=str(results)),
                     check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert error.__name__ in output and message in output, output[-3000:]
    _assert_nothing_trained(results / hippocampus["name"] / f"nnFMTrainer__{PLANS}__3d_fullres" / "fold_0")


def test_unset_nnunet_paths_are_named_with_the_export_line(monkeypatch):
    from nnfm.paths import require_nnunet_paths
    from nnfm_planners.plan_and_preprocess import plan_and_preprocess

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="export nnUNet_raw="):
        require_nnunet_paths()
    with pytest.raises(ConfigurationError, match="nnUNet_preprocessed"):
        plan_and_preprocess(4)


def test_planner_options_are_refused_with_their_message_before_any_dataset_work(tmp_path, monkeypatch):
    """A bad --vit_kwargs / --hires stops first, as one line naming the option, not as a traceback after the
    dataset check and fingerprint (dataset 9999 does not exist: reaching it would name the dataset instead)."""
    from nnfm_planners.plan_and_preprocess import plan_and_preprocess

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    with pytest.raises(SystemExit, match="--vit_kwargs must be a JSON object"):
        plan_and_preprocess(9999, "dinov3_vitb16", "random", vit_kwargs="[1, 2]")
    with pytest.raises(SystemExit, match="--hires / --vit_kwargs apply to the ViT encoders"):
        plan_and_preprocess(9999, None, "random", hires=896)
    # refused by the planners' constructors, i.e. after the dataset work, until they were checked up front
    with pytest.raises(SystemExit, match="--hires / --vit_kwargs apply to the ViT encoders, not 'lvmmed_resnet50'"):
        plan_and_preprocess(9999, "lvmmed_resnet50", "random", hires=512)
    with pytest.raises(SystemExit, match="--hires 100: the slice size must be a multiple of 16"):
        plan_and_preprocess(9999, "dinov3_vitb16", "random", hires=100)
    weights = tmp_path / "anatomix_hu.pth"  # the anatomix layout, pretrained on a HU window anatomix cannot apply
    torch.save({"state_dict": random_state_dict_from_layout(LAYOUTS / "anatomix_unet.json"),
                "nnfm_input_convention": "hu_window"}, weights)
    with pytest.raises(SystemExit, match="pretrained on input convention `hu_window`.*can only be fed"):
        plan_and_preprocess(9999, "anatomix", str(weights))


def test_the_command_ends_every_nnfm_refusal_with_its_message_not_a_traceback(monkeypatch):
    from nnfm_planners import plan_and_preprocess as command

    def refuse(*args, **kwargs):
        raise ConfigurationError("what is wrong. Fix: what to do.")
    monkeypatch.setattr(command, "plan_and_preprocess", refuse)
    with pytest.raises(SystemExit, match="^nnFM_plan_and_preprocess: what is wrong. Fix: what to do.$"):
        command.main(["-d", "4"])


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


@pytest.mark.parametrize("weights, message", [
    ("no_such_weights", "Unknown weights 'no_such_weights': not a file and not a registered name. Registered: "),
    ("missing/anatomix.pth", "Checkpoint missing: missing/anatomix.pth does not exist"),
    ("lvmmed_resnet50", "Weights 'lvmmed_resnet50' are of the lvmmed_resnet50 family; this encoder loads "
                        "anatomix_unet. Fix: -w one of anatomix, anatomix+brains,"),
])
def test_a_wrong_weights_argument_stops_planning_before_the_fingerprint(weights, message, monkeypatch, tmp_path):
    """-w is checked before nnU-Net's fingerprint and preprocessing (minutes to hours), not at nnUNetv2_train."""
    from nnfm_planners.plan_and_preprocess import plan_and_preprocess

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=re.escape(f"nnFM_plan_and_preprocess: {message}")):
        plan_and_preprocess(4, "anatomix", weights)
    assert not list((tmp_path / "nnUNet_preprocessed").iterdir())


def test_planning_accepts_random_an_existing_file_and_the_encoders_own_registry_names(tmp_path):
    from nnfm.registry import encoder_names, get_encoder
    from nnfm.weights import available_weights, check_weights_source

    (tmp_path / "mine.pth").write_bytes(b"read by the trainer, not by the planner")
    for encoder in encoder_names():
        entry = get_encoder(encoder)
        for weights in [None, "random", "None", "scratch", str(tmp_path / "mine.pth"), entry.weights] + \
                [w for f in entry.families for w in available_weights(f)]:
            check_weights_source(weights, entry.families)


def test_the_planner_says_whether_registered_download_weights_are_cached(monkeypatch, tmp_path):
    from nnfm.weights.registry import get_weights_entry
    from nnfm_planners.plan_and_preprocess import describe_weights

    import huggingface_hub.constants

    monkeypatch.setenv("nnFM_weights_cache", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # HF_HOME/hub, read at import
    entry = get_weights_entry("anatomix")
    assert ("not cached yet: nnUNetv2_train fetches it with huggingface_hub from neeldey/anatomix (revision main) "
            "into the hub's cache (HF_HOME; HF_TOKEN for gated repositories); offline, run `hf download "
            f"neeldey/anatomix anatomix.pth --revision main` where there is a connection, or put the file at "
            f"{tmp_path / entry.filename}") in describe_weights("anatomix")
    snapshot = tmp_path / "hub" / "models--neeldey--anatomix" / "snapshots" / ("c" * 40) / "anatomix.pth"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"")
    (tmp_path / "hub" / "models--neeldey--anatomix" / "refs").mkdir()
    (tmp_path / "hub" / "models--neeldey--anatomix" / "refs" / "main").write_text("c" * 40)
    assert f"(cached at {snapshot};" in describe_weights("anatomix")  # in the hub's cache, at main's last commit
    (tmp_path / entry.filename).write_bytes(b"")
    assert f"(cached at {tmp_path / entry.filename};" in describe_weights("anatomix")  # put there by hand
    assert "embedded in the package, offline" in describe_weights("anatomix_synth_nnfm")


def test_an_unknown_dataset_id_is_named_with_the_folders_searched_and_the_fix(monkeypatch, tmp_path):
    from nnfm_planners.plan_and_preprocess import plan_and_preprocess

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    with pytest.raises(SystemExit) as stop:
        plan_and_preprocess(999, "anatomix", "random")
    message = str(stop.value)
    assert "Could not find a dataset with the ID 999" in message and str(tmp_path / "nnUNet_raw") in message
    assert "nnUNetv2_convert_MSD_dataset" in message
