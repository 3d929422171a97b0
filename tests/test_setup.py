"""nnU-Net finds nnFM's trainers in a fresh interpreter, and says what to do when it cannot."""
import os
import subprocess
import sys

from nnfm_trainers import TRAINERS_DIR


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_hook_adds_trainers_folder_and_keeps_user_folders(tmp_path):
    from nnfm._ext_trainer_hook import register_trainers_folder

    env_before = os.environ.get("nnUNet_extTrainer")
    try:
        os.environ["nnUNet_extTrainer"] = str(tmp_path)
        register_trainers_folder()
        assert os.environ["nnUNet_extTrainer"].split(os.pathsep) == [str(tmp_path), TRAINERS_DIR]
        register_trainers_folder()  # idempotent
        assert os.environ["nnUNet_extTrainer"].split(os.pathsep) == [str(tmp_path), TRAINERS_DIR]
    finally:
        if env_before is None:
            os.environ.pop("nnUNet_extTrainer", None)
        else:
            os.environ["nnUNet_extTrainer"] = env_before


def test_nnunet_finds_every_nnfm_trainer_through_its_own_lookup():
    env = dict(os.environ, nnUNet_extTrainer=TRAINERS_DIR)
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
            "for n in ['nnFMTrainer', 'nnFMTrainer_scratch', 'nnFMTrainer_5epochs', 'nnFMTrainer_scratch_1epoch',"
            " 'nnUNetTrainer_nnFMBudget']:\n"
            "    print(n, f(n).__name__)\n")
    result = _python(code, env)
    assert result.returncode == 0, result.stderr
    for name in ("nnFMTrainer", "nnFMTrainer_scratch", "nnFMTrainer_5epochs", "nnFMTrainer_scratch_1epoch"):
        assert f"{name} {name}" in result.stdout


def test_doctor_names_the_fix_when_trainers_are_not_registered():
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet")}
    env["nnFM_NO_AUTO_EXTTRAINER"] = "1"
    result = subprocess.run([sys.executable, "-m", "nnfm.doctor"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "export nnUNet_extTrainer=" in result.stdout and TRAINERS_DIR in result.stdout
    assert "export nnUNet_results=" in result.stdout


def test_former_budget_names_still_resolve_for_old_result_folders():
    # the 84 generated <trainer>_<N>epoch(s) classes are gone; checkpoints that name them must still load
    import importlib

    from nnfm_trainers import former_budget_names, nnfm_trainer_variants

    assert len(former_budget_names.FORMER) + len(former_budget_names.KEPT) == 12 * 7
    for name, (base, epochs) in former_budget_names.FORMER.items():
        cls = getattr(former_budget_names, name)
        assert cls.__name__ == name and cls is getattr(former_budget_names, name)
        assert cls.__mro__[1] is getattr(importlib.import_module(former_budget_names.BASES[base]), base)
    for name in former_budget_names.KEPT:  # written out, found in the variants module
        assert getattr(nnfm_trainer_variants, name).__module__ == nnfm_trainer_variants.__name__
        assert not hasattr(former_budget_names, name)
    assert not hasattr(former_budget_names, "nnFMTrainer_7epochs")  # no new names are invented
    assert not hasattr(former_budget_names, "nnFMTrainer_SGD_5epochs")
