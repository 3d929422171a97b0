"""Pretraining checkpoints: a resumable training state, and the exported weights.

``checkpoint_latest.pth``: step, encoder, heads, optimizer, RNG states, settings, loss history.
``anatomix_synth.pth`` (``<encoder>_synth.pth`` for another encoder): ``{"state_dict": the network's state_dict
(anatomix: keys ``model.<i>.*``), "nnfm_input_convention": "window01" | "zscore"}`` (the intensities the network was
pretrained on; nnfm/weights/input_convention.py), the file nnFM's trainers load with ``-w`` / ``nnFM_WEIGHTS``. Both are written to a temporary file and renamed, so a run
killed mid-save leaves the previous checkpoint intact.
"""
import os
import random
from pathlib import Path
from typing import Any, Dict

import torch

from nnfm.errors import ConfigurationError
from nnfm.weights.input_convention import with_convention

LATEST = "checkpoint_latest.pth"
EXPORT = "anatomix_synth.pth"


def _atomic_save(obj: Any, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


def encoder_state_dict(encoder: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A CPU copy of ``encoder``'s state dict in which names of one tensor stay one tensor (dynamic-network-
    architectures registers modules under several names: ``all_modules``, the decoder's ``encoder``), so the file
    holds each tensor once, as ``torch.save(network.state_dict())`` does."""
    copies: Dict[int, torch.Tensor] = {}
    out = {}
    for key, value in encoder.state_dict().items():
        ident = value.data_ptr() if value.numel() else id(value)
        if ident not in copies:
            copies[ident] = value.detach().cpu().clone()
        out[key] = copies[ident]
    return out


def export_name(encoder: str) -> str:
    """File name of the exported weights of a synthetic SupCon run on ``encoder``."""
    return EXPORT if encoder == "anatomix" else f"{encoder}_synth.pth"


def save_training_checkpoint(out_dir: Path, step: int, model, optimizer, settings: Dict[str, Any],
                             loss_history, export: str, input_convention: str) -> None:
    """``model`` is the (unwrapped) SupConPretrainingModel."""
    out_dir = Path(out_dir)
    _atomic_save({
        "step": step,
        "model": encoder_state_dict(model.encoder),
        "heads": {k: v.detach().cpu() for k, v in model.heads.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "settings": settings,
        "loss_history": [float(x) for x in loss_history],
    }, out_dir / LATEST)
    _atomic_save(with_convention(encoder_state_dict(model.encoder), input_convention), out_dir / export)


def load_training_checkpoint(out_dir: Path) -> Dict[str, Any]:
    path = Path(out_dir) / LATEST
    if not path.exists():
        raise ConfigurationError(f"--resume: no {LATEST} in {out_dir}. Fix: --out the folder of the run to resume, "
                                 f"or leave --resume out to start one.")
    # own file, tensors and plain Python values only: the safe loader suffices
    return torch.load(path, map_location="cpu", weights_only=True)
