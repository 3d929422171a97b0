"""nnFM_PATCH_SIZE / nnFM_BATCH_SIZE: CPU-sized training of planned networks, the same for nnFM's trainers and
nnU-Net's own, recorded in the plans the model is predicted with, and in the benchmark profile's name."""
import json

import pytest

from conftest import trainer_in_process
from nnfm.benchmark.profiles import budget_environment, resolve_profile
from nnfm.errors import ConfigurationError
from nnfm.training.run_overrides import apply_patch_and_batch_overrides, limit_validation_cases, parse_patch


def plans_for(encoder=None, patch=(48, 64, 48), batch=3):
    config = {"patch_size": list(patch), "batch_size": batch}
    if encoder:
        config["nnfm"] = {"encoder": encoder}
    else:
        config["architecture"] = {"arch_kwargs": {"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]}}
    return {"configurations": {"3d_fullres": config,
                               "3d_cascade_fullres": {"inherits_from": "3d_fullres"}}}


def test_patch_and_batch_are_written_into_a_copy_of_the_plans():
    plans = plans_for("anatomix")
    new, lines = apply_patch_and_batch_overrides(plans, "3d_fullres",
                                                 {"nnFM_PATCH_SIZE": "32x48x32", "nnFM_BATCH_SIZE": "2"})
    assert new["configurations"]["3d_fullres"]["patch_size"] == [32, 48, 32]
    assert new["configurations"]["3d_fullres"]["batch_size"] == 2
    assert plans["configurations"]["3d_fullres"]["patch_size"] == [48, 64, 48]  # the caller's dict is untouched
    assert lines == ["patch_size [48, 64, 48] -> [32, 48, 32] (from nnFM_PATCH_SIZE)",
                     "batch_size 3 -> 2 (from nnFM_BATCH_SIZE)"]
    # nothing set: the plans object itself, no copy, no log line
    assert apply_patch_and_batch_overrides(plans, "3d_fullres", {}) == (plans, [])
    # an inheriting configuration gets the values; its parent stays as planned
    new, _ = apply_patch_and_batch_overrides(plans, "3d_cascade_fullres", {"nnFM_BATCH_SIZE": "1"})
    assert new["configurations"]["3d_cascade_fullres"]["batch_size"] == 1
    assert new["configurations"]["3d_fullres"]["batch_size"] == 3


@pytest.mark.parametrize("encoder, value, message", [
    ("anatomix", "40,48,32", r"multiples of \[16, 16, 16\].*Fix: e.g. 32,48,32"),   # anatomix: 4 poolings
    # nnU-Net's plans: the product of the pooling strides per axis (the last axis is pooled twice)
    (None, "32,44,36", r"multiples of \[8, 8, 4\].*Fix: e.g. 32,40,36"),
    ("anatomix", "32,48", r"2 axes but configuration '3d_fullres' is 3D"),
    ("anatomix", "32,-48,32", r"not a patch size"),
])
def test_bad_patch_is_refused_with_the_fix(encoder, value, message):
    with pytest.raises(ConfigurationError, match=message):
        apply_patch_and_batch_overrides(plans_for(encoder), "3d_fullres", {"nnFM_PATCH_SIZE": value})


def test_bad_batch_is_refused():
    with pytest.raises(ConfigurationError, match="nnFM_BATCH_SIZE='0' is not a positive integer"):
        apply_patch_and_batch_overrides(plans_for("anatomix"), "3d_fullres", {"nnFM_BATCH_SIZE": "0"})


def test_validation_cases_are_the_first_n_sorted():
    cases = ["c3", "c1", "c2"]
    assert limit_validation_cases(cases, {}) == (cases, [])
    assert limit_validation_cases(cases, {"nnFM_VAL_CASES": "2"}) == \
        (["c1", "c2"], ["validation cases 3 -> 2 (from nnFM_VAL_CASES)"])
    assert limit_validation_cases(cases, {"nnFM_VAL_CASES": "9"})[0] == ["c1", "c2", "c3"]
    with pytest.raises(ConfigurationError, match="nnFM_VAL_CASES='-1' is not a positive integer"):
        limit_validation_cases(cases, {"nnFM_VAL_CASES": "-1"})


def test_parse_patch_accepts_the_usual_spellings():
    assert parse_patch("32,48,32") == parse_patch("32x48x32") == parse_patch(" 32 48 32 ") == (32, 48, 32)


def test_benchmark_profile_names_and_sets_the_patch_and_batch():
    demo = resolve_profile("demo")
    assert (demo.epochs, demo.iterations, demo.patch_size, demo.batch_size, demo.test_tta) == \
        (11, 30, (32, 48, 32), 2, False)
    custom = resolve_profile("20x20", [32, 48, 32], 2)
    assert custom.name == "20x20_p32x48x32_b2" and custom.iterations == 20
    assert resolve_profile("20x20").name == "20x20" and resolve_profile("20x20").patch_size is None
    env = budget_environment(custom, {"nnFM_PATCH_SIZE": "stale", "nnFM_BATCH_SIZE": "9"})
    assert (env["nnFM_PATCH_SIZE"], env["nnFM_BATCH_SIZE"]) == ("32,48,32", "2")
    # a profile without overrides clears a stale one from the caller's environment
    env = budget_environment(resolve_profile("smoke"), {"nnFM_PATCH_SIZE": "stale"})
    assert "nnFM_PATCH_SIZE" not in env
    assert custom.as_record()["patch_size"] == "32x48x32" and demo.as_record()["batch_size"] == 2
    with pytest.raises(ValueError, match="nnU-Net's own schedule"):
        resolve_profile("full", [32, 48, 32])
    cpu = resolve_profile("20x20", [32, 48, 32], 2, 8, test_tta=False)
    assert cpu.name == "20x20_p32x48x32_b2_v8_notta" and budget_environment(cpu, {})["nnFM_VAL_CASES"] == "8"
    assert (cpu.as_record()["val_cases"], cpu.as_record()["test_tta"]) == (8, False)


def test_nnfm_and_nnunet_trainers_train_and_save_the_overridden_patch(hippocampus, nnunet_env, monkeypatch,
                                                                       tmp_path):
    from nnfm_trainers.nnfm_trainer_variants import nnFMTrainer_scratch
    from nnfm_trainers.nnunet_baseline import nnUNetTrainer_nnFMBudget

    for trainer_class in (nnFMTrainer_scratch, nnUNetTrainer_nnFMBudget):
        trainer = trainer_in_process(trainer_class, hippocampus, nnunet_env, monkeypatch, tmp_path / trainer_class.__name__,
                                     nnFM_PATCH_SIZE="32,48,32", nnFM_BATCH_SIZE="1")
        assert trainer.configuration_manager.patch_size == [32, 48, 32]
        assert trainer.configuration_manager.batch_size == 1
        assert trainer.save_every == 1  # a killed benchmark run resumes from its last epoch (nnU-Net: every 50)
        # the plans nnU-Net saves next to the model (and nnUNetv2_predict reads) carry the trained patch
        assert trainer.plans_manager.plans["configurations"]["3d_fullres"]["patch_size"] == [32, 48, 32]
        assert json.loads(json.dumps(hippocampus["plans"]))["configurations"]["3d_fullres"]["patch_size"] != [32, 48, 32]
        # nnFM_VAL_CASES: fold 0 of the test dataset validates on one case; 1 keeps it, for both trainers
        monkeypatch.setenv("nnFM_VAL_CASES", "1")
        assert trainer.do_split()[1] == hippocampus["val"]


def test_an_encoders_plans_with_their_own_topology_divide_by_its_pooling_not_the_registry_default():
    """nnFMResEncPlanner plans resenc_l at the topology of the checkpoint's adaptation plan (any number of stages):
    a 4-stage ResEnc pools 8x, not the 32x of the registry's default 6-stage ResEnc-L (before: 40,48,40 refused)."""
    plans = plans_for("resenc_l")
    plans["configurations"]["3d_fullres"]["architecture"] = {
        "arch_kwargs": {"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]}}
    new, _ = apply_patch_and_batch_overrides(plans, "3d_fullres", {"nnFM_PATCH_SIZE": "40,48,40"})
    assert new["configurations"]["3d_fullres"]["patch_size"] == [40, 48, 40]
    with pytest.raises(ConfigurationError, match=r"multiples of \[8, 8, 8\]"):
        apply_patch_and_batch_overrides(plans, "3d_fullres", {"nnFM_PATCH_SIZE": "36,48,40"})
