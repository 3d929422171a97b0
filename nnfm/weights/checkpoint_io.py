"""Read a checkpoint without executing code from it, and unwrap it to a flat state dict.

A checkpoint is untrusted input: pickles are read with ``torch.load(weights_only=True)``, which
refuses arbitrary globals; ``.safetensors`` files hold tensors only. numpy scalars and dtypes
(what nnU-Net's own checkpoints contain besides tensors) are the only extra types allowed.
"""
import json
import pickle
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from nnfm.errors import CheckpointCorruptError, UnsafeCheckpointError

# containers used by the checkpoints nnFM knows: nnU-Net, generic trainers, DINO(v3)/MedDINOv3
CONTAINER_KEYS = ("network_weights", "state_dict", "model", "teacher", "student")
PREFIXES = ("_orig_mod.", "module.")


def _numpy_safe_globals() -> list:
    allowed = [np.dtype]
    core = getattr(np, "_core", None) or getattr(np, "core")
    allowed.append(core.multiarray.scalar)
    allowed += [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "bool", "uint8")]
    return allowed


def _torch_load(path: Path):
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        if "nsupported global" in message or "unsupported GLOBAL" in message:
            culprit = next((l.strip() for l in message.splitlines() if "GLOBAL" in l), "a non-tensor object")
            raise UnsafeCheckpointError(
                f"{path} needs arbitrary Python code to load ({culprit}). nnFM never executes code from "
                f"checkpoints. If you trust the file, convert it once in a trusted environment to a plain state "
                f"dict: torch.save(torch.load(path, weights_only=False)['<key>'], 'clean.pth'), or to "
                f"safetensors, and pass that file instead.") from None
        raise CheckpointCorruptError(_corrupt_message(path, error)) from None
    except Exception as error:  # garbage bytes can fail anywhere inside the (safe) unpickler
        raise CheckpointCorruptError(_corrupt_message(path, error)) from None


def _corrupt_message(path: Path, error: Exception) -> str:
    return (f"{path} is not a readable checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else 'empty or truncated'}). "
            f"It may be truncated or corrupt: delete it (if it is in the nnFM cache it is downloaded again) "
            f"or re-export it.")


# safetensors metadata of nnFM's embedded files: {alias: stored name} for keys naming one tensor twice
# (nnfm/weights/embed.py split_aliases)
ALIASES_KEY = "nnfm_aliases"
# safetensors metadata key prefix of a .pth export's top-level records that an embedded copy keeps (JSON values):
# read back as ``{"state_dict": tensors, record: value}``, the layout of the .pth it was made from
RECORD_PREFIX = "nnfm_record."


def read_checkpoint(path: Path):
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
            records = {k[len(RECORD_PREFIX):]: json.loads(v) for k, v in metadata.items() if k.startswith(RECORD_PREFIX)}
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointCorruptError(_corrupt_message(path, error)) from None
        # every name back, as the same tensor (as torch.load returns nnU-Net's aliased state dicts)
        state = {**state, **{alias: state[name] for alias, name in aliases.items()}}
        return dict(records, state_dict=state) if records else state
    return _torch_load(path)


def unwrap_state_dict(obj) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Descend into known containers and strip wrapper prefixes; report what was unwrapped."""
    unwrapped = []
    while isinstance(obj, dict) and not _is_state_dict(obj):
        key = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        unwrapped.append(f"['{key}']")
        obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointCorruptError(f"Checkpoint holds a {type(obj).__name__}, not a state dict.")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in PREFIXES:
        while state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            unwrapped.append(f"prefix '{prefix}'")
    return state, unwrapped


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= max(1, len(obj) // 2)


def read_state_dict(path: Path) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    return unwrap_state_dict(read_checkpoint(path))
