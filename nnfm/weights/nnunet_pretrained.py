"""nnU-Net's own fine-tuning flag, ``nnUNetv2_train ... -pretrained_weights CHECKPOINT``, for nnFM networks.

nnU-Net's ``run_training`` calls ``trainer.initialize()`` and then ``load_pretrained_weights``,
which asserts (dumping a whole tensor) on the first key that is missing or shaped differently,
except keys containing ``.seg_layers.``. No hook runs between the two and the trainer is not told
the path, so nnFM reads the flag from the command line and checks the file in ``initialize()``.
"""
import sys
from pathlib import Path
from typing import List, Optional

import torch

from nnfm.errors import CheckpointMismatchError
from nnfm.weights.checkpoint_io import read_checkpoint, unwrap_state_dict
from nnfm.weights.download import sha256_of

SEG_LAYERS = ".seg_layers."  # nnU-Net's skip rule (nnunetv2/run/load_pretrained_weights.py)


FLAG = "-pretrained_weights"


def pretrained_weights_argument(argv: Optional[List[str]] = None) -> Optional[str]:
    """The ``-pretrained_weights`` value of this ``nnUNetv2_train`` process, or None.

    Scanned by hand: an argparse parser with only this flag would take nnU-Net's ``-p PLANS`` for an
    abbreviation of it. Accepts what nnU-Net's parser accepts: the flag, an unambiguous prefix of it
    (``-pr...``, no other nnU-Net flag starts so), and ``FLAG=value``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    for index, token in enumerate(argv):
        name, _, value = token.partition("=")
        if len(name) >= 3 and FLAG.startswith(name):
            if value:
                return value
            return argv[index + 1] if index + 1 < len(argv) else None
    return None


def check_pretrained_weights(network: torch.nn.Module, path) -> str:
    """Raise CheckpointMismatchError (short, with the fix) unless nnU-Net can load ``path`` into ``network``.

    Every network key outside ``seg_layers`` must exist in the file's ``network_weights`` with the
    same shape. Returns the file's sha256 for the provenance.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    state, _ = unwrap_state_dict(checkpoint)
    target = {k: v for k, v in network.state_dict().items() if SEG_LAYERS not in k}
    missing = [k for k in target if k not in state]
    shapes = [f"{k}: file {list(state[k].shape)}, network {list(v.shape)}" for k, v in target.items()
              if k in state and state[k].shape != v.shape]
    if missing or shapes:
        origin = ""
        if isinstance(checkpoint, dict) and checkpoint.get("trainer_name"):
            plans = (checkpoint.get("init_args") or {}).get("plans") or {}
            config = plans.get("configurations", {}).get((checkpoint.get("init_args") or {}).get("configuration"), {})
            arch = config.get("architecture", {}).get("network_class_name", "?")
            origin = f" (trained with {checkpoint['trainer_name']}, network {arch}, patch {config.get('patch_size')})"
        problems = ([f"{len(missing)} weight(s) missing, e.g. {', '.join(missing[:3])}"] if missing else []) + \
                   ([f"{len(shapes)} with other shapes, e.g. {'; '.join(shapes[:2])}"] if shapes else [])
        raise CheckpointMismatchError(
            f"-pretrained_weights {path}{origin} does not fit {type(network).__name__}: {'; '.join(problems)}. "
            f"nnU-Net's -pretrained_weights needs the same network and patch size (only the segmentation layers "
            f"may differ). To reuse just the encoder of an nnFM checkpoint, drop -pretrained_weights and set "
            f"nnFM_WEIGHTS={path} instead.")
    return sha256_of(path)
