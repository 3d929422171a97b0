"""nnU-Net's environment as nnFM uses it, in one place: the nnUNet_* folder variables, nnFM's trainers in
nnUNet_extTrainer, and the console scripts of this Python environment.

Used by the start-up hook (``nnfm/_ext_trainer_hook.py``), the trainers and planners, ``nnFM_doctor``,
``nnFM_benchmark`` and ``nnFM_demo``. It imports nothing heavy: the start-up hook runs it in every interpreter.
nnU-Net 2.8.1 reads these variables in nnunetv2/paths.py; it finds trainers outside its package only
through ``nnUNet_extTrainer`` (nnunetv2/utilities/find_objects.py, ``recursive_find_trainer_class_by_name``).
"""
import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterable, List, Mapping, MutableMapping, Optional

from nnfm.errors import ConfigurationError

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
_PURPOSE = {
    "nnUNet_raw": "raw datasets (DatasetXXX_Name folders)",
    "nnUNet_preprocessed": "fingerprints, plans and preprocessed data",
    "nnUNet_results": "trained models",
}


# ---- nnUNet_raw / _preprocessed / _results ------------------------------------------------------------
def missing_nnunet_paths(names: Iterable[str] = NNUNET_FOLDERS, env: Mapping = os.environ) -> List[str]:
    return [n for n in names if not env.get(n)]


def export_line(name: str) -> str:
    return f"export {name}=/path/to/{name}"


def require_nnunet_paths(names: Iterable[str] = NNUNET_FOLDERS, env: Mapping = os.environ) -> None:
    missing = missing_nnunet_paths(names, env)
    if missing:
        lines = "\n".join(f"  {export_line(n)}   # {_PURPOSE.get(n, '')}" for n in missing)
        raise ConfigurationError(
            f"nnU-Net environment variable(s) not set: {', '.join(missing)}.\n"
            f"Set them before running nnU-Net or nnFM commands, for example:\n{lines}")


# ---- nnFM's trainers in nnUNet_extTrainer ------------------------------------------------------------------
def package_folder(name: str) -> Optional[str]:
    """The folder Python would import package ``name`` from, without importing it (None if it cannot)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def ext_trainer_folders(env: Mapping = os.environ) -> List[str]:
    return [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]


def register_trainers(env: MutableMapping = os.environ) -> MutableMapping:
    """Append nnFM's trainers folder (package ``nnfm_trainers``) to ``env``'s nnUNet_extTrainer, once.

    Folders already there keep priority: nnU-Net searches them in order and takes the first match.
    """
    folder = package_folder("nnfm_trainers")
    current = ext_trainer_folders(env)
    if folder is not None and folder not in current:
        env["nnUNet_extTrainer"] = os.pathsep.join(current + [folder])
    return env


# ---- console scripts -----------------------------------------------------------------------------------------
def console_script(name: str) -> str:
    """A console script of this environment (nnUNetv2_train, nnFM_plan_and_preprocess, ...), even when its
    bin folder is not on PATH (a venv's python called by its path); else the bare name for PATH to find."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name
