"""Pretraining checkpoints: a resumable training state, and the exported anatomix weights.

``checkpoint_latest.pth``: step, encoder, heads, optimizer, RNG states, settings, loss history.
``anatomix_synth.pth``: ``{"state_dict": AnatomixUNet state_dict (keys ``model.<i>.*``), "nnfm_input_convention":
"window01"}`` (the synthetic volumes are in [0, 1], anatomix's input; nnfm/weights/input_convention.py), the file
nnFM's trainer loads with ``-w`` / ``nnFM_WEIGHTS``. Both are written to a temporary file and renamed, so a run
killed mid-save leaves the previous checkpoint intact.
"""
import os
import random
from pathlib import Path
from typing import Any, Dict

import torch

from nnfm.conventions import WINDOW01
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
    return {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}


def save_training_checkpoint(out_dir: Path, step: int, model, optimizer, settings: Dict[str, Any],
                             loss_history) -> None:
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
    _atomic_save(with_convention(encoder_state_dict(model.encoder), WINDOW01.name), out_dir / EXPORT)


def load_training_checkpoint(out_dir: Path) -> Dict[str, Any]:
    path = Path(out_dir) / LATEST
    if not path.exists():
        raise FileNotFoundError(f"--resume: no {LATEST} in {out_dir}")
    # own file, tensors and plain Python values only: the safe loader suffices
    return torch.load(path, map_location="cpu", weights_only=True)
