"""DrasCLR checkpoints -> nnFM's DrasCLR encoder (nnfm/networks/drasclr.py), which keeps the authors' names.

The published file is what batmanlab/DrasCLR train.py ``save_checkpoint`` writes: ``{'epoch', 'arch', 'state_dict',
'optimizer'}`` with the state dict of ``DistributedDataParallel(DrasCLR)``. After ``load_pretrained`` has unwrapped
``['state_dict']`` and the ``module.`` prefix, the keys are ``encoder_q.*`` (the query encoder, the one
extract_feature.py keeps), ``encoder_k.*`` (momentum encoder), ``queue`` and ``queue_ptr``.
"""
from typing import Dict, Tuple

from nnfm.weights.families import CheckpointFamily, StateDict, has_prefix, register_family

# models/builder.py (DrasCLR) and extract_feature.py, batmanlab/DrasCLR@2d07e07
_ENCODER_K = ("MoCo momentum (key) encoder: an exponential moving average of encoder_q that only produces the "
              "contrastive keys during pretraining (models/builder.py _momentum_update_key_encoder); "
              "extract_feature.py keeps encoder_q")
_QUEUE = ("MoCo queue of negative keys per atlas location [moco_dim, K, num_patch] and its write pointer "
          "(models/builder.py); pretraining state, not part of the encoder")
_PROJECTION = ("MoCo projection head (Linear-ReLU-Linear on the 128-d representation, models/builder.py mlp=True); "
               "only feeds the contrastive loss, extract_feature.py removes it too")
_DECODER = "decoder of an nnFM DrasCLR network; re-initialised for the new task"


def drasclr_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """``encoder_q.*`` (published DDP checkpoint), ``encoder.*`` (an nnFM DrasCLR network, e.g. an nnU-Net
    checkpoint) or bare encoder keys (the authors' ``Encoder`` state dict) -> the encoder's names."""
    mapped, dropped = {}, {}
    for key, value in state.items():
        if key.startswith(("encoder_q.fc.", "fc.")):
            dropped[key] = _PROJECTION
        elif key.startswith("encoder_q."):
            mapped[key[len("encoder_q."):]] = value
        elif key.startswith("encoder_k."):
            dropped[key] = _ENCODER_K
        elif key in ("queue", "queue_ptr"):
            dropped[key] = _QUEUE
        elif key.startswith("encoder."):
            mapped[key[len("encoder."):]] = value
        elif key.startswith("decoder."):
            dropped[key] = _DECODER
        else:
            mapped[key] = value  # bare encoder keys; anything else is left for the strict comparison to report
    return mapped, dropped


register_family(CheckpointFamily(
    "drasclr", lambda k, s: has_prefix(k, "encoder_q.", "encoder_k.") or any("._routing_fn.fc." in key for key in k),
    "the DrasCLR encoder",
    drasclr_filter, "conv1.weight", stem_in_dim=2))
