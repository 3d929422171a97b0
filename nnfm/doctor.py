"""``nnFM_doctor``: check that nnU-Net will find nnFM's trainers and data folders, and say how to fix it.

It never crashes on a broken installation: an import that fails, or a module of nnFM that Python
resolves from somewhere else (a user's package of the same name earlier on sys.path), is a FIX line.
"""
import os
import pkgutil
import sys
from typing import List, Optional, Tuple

from nnfm.paths import NNUNET_FOLDERS, export_line, ext_trainer_folders, package_folder

# nnFM's three top-level packages: side by side when installed, repository folders in a source checkout
NNFM_PACKAGES = ("nnfm", "nnfm_trainers", "nnfm_planners")
SOURCE_FOLDERS = {"nnfm": "nnfm", "nnfm_trainers": "trainers", "nnfm_planners": "planners"}  # setup.py package_dir
Line = Tuple[bool, str]


def _installed_root() -> str:
    """The folder nnFM's own packages were installed into (where this file's package lives)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_packages() -> Tuple[List[Line], Optional[str]]:
    """Each nnFM package must resolve to nnFM's installed copy. Returns (lines, nnFM's trainers folder)."""
    lines, root = [], _installed_root()
    for name in NNFM_PACKAGES:
        folder = package_folder(name)
        expected = os.path.join(root, name)
        allowed = {os.path.normcase(expected), os.path.normcase(os.path.join(root, SOURCE_FOLDERS[name]))}
        if folder is None:
            lines.append((False, f"Python cannot import nnFM's package '{name}' (expected in {root}). "
                                 f"Fix: reinstall nnFM: pip install --force-reinstall --no-deps /path/to/nnFM"))
        elif os.path.normcase(folder) not in allowed:
            lines.append((False, f"'{name}' resolves to {folder}, not nnFM's {expected}: another package of that "
                                 f"name shadows nnFM. Fix: rename or remove it, or take its folder off "
                                 f"PYTHONPATH/sys.path"))
    trainers = next((os.path.join(root, f) for f in ("nnfm_trainers", "trainers")
                     if os.path.isfile(os.path.join(root, f, "nnfm_trainer.py"))), None)
    return lines, trainers


def trainer_module_names(folder: str) -> set:
    return {name for _, name, ispkg in pkgutil.iter_modules([folder]) if not ispkg}


def check_ext_trainer(trainers_dir: Optional[str]) -> List[Line]:
    """nnUNet_extTrainer must include nnFM's trainers; other folders there must not reuse nnFM's module names
    (nnU-Net imports each folder's modules by bare name, so the first folder's module of a name wins)."""
    ext = ext_trainer_folders()
    if trainers_dir is None:
        return [(False, "nnFM's trainers folder is not installed, so nnUNetv2_train cannot find nnFMTrainer. "
                        "Fix: reinstall nnFM (pip install --no-deps /path/to/nnFM)")]
    lines = []
    if os.path.abspath(trainers_dir) in [os.path.abspath(p) for p in ext]:
        lines.append((True, f"nnUNet_extTrainer includes nnFM's trainers ({trainers_dir})"))
    else:
        lines.append((False, "nnUNet_extTrainer does not include nnFM's trainers, so nnUNetv2_train/-predict "
                             "cannot find nnFMTrainer. Fix: export nnUNet_extTrainer="
                             f"{os.pathsep.join(ext + [trainers_dir])}"))
    ours = trainer_module_names(trainers_dir) | set(NNFM_PACKAGES)
    for folder in ext:
        if os.path.abspath(folder) == os.path.abspath(trainers_dir) or not os.path.isdir(folder):
            continue
        clash = sorted(ours & {name for _, name, _ in pkgutil.iter_modules([folder])})
        if clash:
            lines.append((False, f"nnUNet_extTrainer folder {folder} has module(s) named like nnFM's trainer modules "
                                 f"({', '.join(clash)}); nnU-Net imports them by bare name, so they can hide or "
                                 f"break nnFM's trainers. Fix: rename them in {folder}"))
    return lines


def check_embedded_weights() -> List[Line]:
    """Every weights file shipped inside the package is present and has its registered sha256."""
    lines = []
    try:
        from nnfm.errors import NNFMError
        from nnfm.weights.loading import resolve_checkpoint
        from nnfm.weights.registry import embedded_weights
        for entry in embedded_weights():
            try:
                path, sha = resolve_checkpoint(entry.name)
                lines.append((True, f"embedded weights '{entry.name}' ({entry.family}): {path}, sha256 {sha} "
                                    f"verified; {entry.description}"))
            except NNFMError as error:
                lines.append((False, str(error)))
    except Exception as error:  # a doctor must report, not crash
        lines.append((False, f"embedded weights could not be checked ({type(error).__name__}: {error}). Fix: "
                             f"reinstall nnFM (pip install --force-reinstall --no-deps /path/to/nnFM)"))
    return lines


def diagnose() -> List[Line]:
    """Return a list of (ok, message) lines; never raises on a broken or shadowed installation."""
    try:
        lines, trainers_dir = check_packages()
        lines += check_ext_trainer(trainers_dir)
    except Exception as error:  # a doctor must report, not crash
        lines = [(False, f"nnFM_doctor could not inspect the installation ({type(error).__name__}: {error}). "
                         f"Fix: reinstall nnFM (pip install --force-reinstall --no-deps /path/to/nnFM)")]
    lines += check_embedded_weights()
    for name in NNUNET_FOLDERS:
        value = os.environ.get(name)
        lines.append((bool(value), f"{name}={value}" if value else f"{name} is not set. Fix: {export_line(name)}"))
    return lines


def main() -> None:
    lines = diagnose()
    for ok, message in lines:
        print(("OK    " if ok else "FIX   ") + message)
    sys.exit(0 if all(ok for ok, _ in lines) else 1)


if __name__ == "__main__":
    main()
