"""Checks of nnU-Net's environment variables with errors that say what to export."""
import os
from typing import Iterable

from nnfm.errors import ConfigurationError

_PURPOSE = {
    "nnUNet_raw": "raw datasets (DatasetXXX_Name folders)",
    "nnUNet_preprocessed": "fingerprints, plans and preprocessed data",
    "nnUNet_results": "trained models",
}


def require_nnunet_paths(names: Iterable[str] = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")) -> None:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        lines = "\n".join(f"  export {n}=/path/to/{n}   # {_PURPOSE.get(n, '')}" for n in missing)
        raise ConfigurationError(
            f"nnU-Net environment variable(s) not set: {', '.join(missing)}.\n"
            f"Set them before running nnU-Net or nnFM commands, for example:\n{lines}")
