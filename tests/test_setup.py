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


def test_install_script_skips_pip_while_the_installed_sources_are_unchanged(tmp_path):
    """README's commands rerun scripts/install.sh: with the sources as installed it must not rebuild (seconds, not
    a minute of pip), and any edit of what the install copies must reinstall. A stub .venv/bin/python logs pip."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").mkdir()
    shutil.copy(repo / "scripts" / "install.sh", tmp_path / "scripts" / "install.sh")
    for name in ("setup.py", "nnfm-ext-trainer.pth", "nnfm/__init__.py", "trainers/__init__.py",
                 "planners/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("# " + name + "\n")
    stub = tmp_path / ".venv" / "bin" / "python"
    stub.parent.mkdir(parents=True)
    stub.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "calls.log"}\n')
    stub.chmod(0o755)

    def install() -> str:
        result = subprocess.run(["bash", "scripts/install.sh"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def pip_installs() -> int:
        return (tmp_path / "calls.log").read_text().count('install -q --disable-pip-version-check .[test]')

    assert "nnFM installed" in install() and pip_installs() == 1
    assert "already installed" in install() and pip_installs() == 1
    (tmp_path / "trainers" / "__init__.py").write_text("# edited\n")
    assert "nnFM installed" in install() and pip_installs() == 2
