"""Which part of a pretraining file a fine-tuning network takes, as the file records it.

Masked-image reconstruction trains a whole U-Net, but its decoder reconstructs images: nnU-Net master fine-tunes
nnssl's checkpoints from their stem and encoder only (MIC-DKFZ/nnUNet nnunetv2/training/nnUNetTrainer/pretraining/
pretrainedTrainer.py ``load_pretrained_weights``, the prefixes ``key_to_stem`` / ``key_to_encoder`` of the file's
``nnssl_adaptation_plan``). nnFM's own MAE exports of nnU-Net's networks record the same rule under
``TRANSFER_KEY`` (nnfm/pretraining/mae/trainer.py). A file that records neither transfers whole (nnU-Net's
``-pretrained_weights``: everything but the segmentation layers), as nnFM's synthetic SupCon exports, whose decoder
stages are pretrained features too.
"""
from typing import Any, Optional, Sequence, Tuple

from nnfm.weights.nnssl_adaptation import RESENC_KEY_TO_ENCODER, RESENC_KEY_TO_STEM, read_adaptation_plan

TRANSFER_KEY = "nnfm_transfer"
# why the rest of such a file stays behind (load reports, shape-fit reports, refusals)
ENCODER_ONLY_REASON = ("the file is a masked-image reconstruction pretraining: only its stem and encoder transfer, its "
                       "decoder reconstructs images (nnU-Net master PretrainedTrainer.load_pretrained_weights)")


def transfer_prefixes(checkpoint: Any) -> Optional[Tuple[str, ...]]:
    """Key prefixes of the part a fine-tuning network takes ("encoder.stem.", "encoder.stages."), from nnssl's
    adaptation plan or nnFM's ``TRANSFER_KEY``; None where the file records neither (it transfers whole)."""
    plan = read_adaptation_plan(checkpoint)
    if plan is not None:
        return tuple(str(plan.get(k, default)) + "." for k, default in (("key_to_stem", RESENC_KEY_TO_STEM),
                                                                      ("key_to_encoder", RESENC_KEY_TO_ENCODER)))
    recorded = checkpoint.get(TRANSFER_KEY) if isinstance(checkpoint, dict) else None
    return tuple(str(p) for p in recorded) if recorded else None


def with_transfer(saved: dict, prefixes: Sequence[str]) -> dict:
    """An nnFM export (``{"state_dict": ..., ...}``) that records the part fine-tuning takes."""
    return dict(saved, **{TRANSFER_KEY: list(prefixes)})
