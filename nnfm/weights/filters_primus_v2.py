"""Checkpoint family ``primus_v2``: the state dict of a dynamic-network-architectures ``PrimusV2`` / ``PrimusV3``
module (iterative tokenizer ``down_projection.stem.*`` / ``.stages.*`` / ``.final_proj.*``, optional
``register_tokens``, ``eva.*``, ``up_projection.*``, ``mask_token``).

Files of this layout: anatomix-dev-vit.pth (neel-dey/anatomix, a bare state dict of the whole PrimusV2 module,
optionally with torch.compile's ``_orig_mod.`` prefix, which nnFM's reader strips), the ``network_weights`` of
nnU-Net's ``nnUNet_PrimusV2*_Trainer`` / ``nnUNet_PrimusV3*_Trainer`` checkpoints, and nnFM's own
``PrimusV2SegmentationNetwork`` (``encoder.*`` + ``decoder.*``). The filter keeps the encoder part and names
every key it leaves out with its reason; the adapter resizes the position embedding to the network's token
grid (register rows kept) and adapts the tokenizer's other input-channel convolutions along with its stem.

``up_projection.*`` (DNA's ``PatchDecode`` output head: anatomix-dev-vit's 32 dense feature channels) loads into
a network built with ``keep_up_projection=True``, whose encoder holds one, and is dropped with its reason for any
other. A filter sees the checkpoint only, so it keeps the head provisionally (in ``mapped`` and, with its reason,
in the dropped keys) and the adapter, which sees the network, settles it: loaded (reason withdrawn) or removed
from ``mapped`` (reason kept).
"""
from typing import Any, Dict, Tuple

import torch

from nnfm.errors import CheckpointMismatchError
from nnfm.weights.adapters import adapt_stem_channels
from nnfm.weights.families import CheckpointFamily, StateDict, register_family
from nnfm.weights.pos_embed import checkpoint_token_grid, resize_pos_embed_3d

POS_EMBED_KEY = "eva.pos_embed"
REGISTER_KEY = "register_tokens"
# the tokenizer's first convolution (DNA PrimusV2.keys_to_in_proj[0]); the family record's stem_key
STEM_KEY = "down_projection.stem.blocks.0.conv1.conv.weight"
# every convolution of the stem's first residual block sees the image: conv1 and, when the image has fewer
# channels than the stem's 32, the 1x1x1 skip projection; DNA's ConvDropoutNormReLU holds each twice
# (``conv`` and ``all_modules.0``: one tensor, two keys)
_STEM_BLOCK = "down_projection.stem.blocks.0."

# the output head of DNA Primus (PatchDecode); the encoder of a keep_up_projection network holds it
HEAD_PREFIX = "up_projection."

_REASONS = {
    HEAD_PREFIX: "pretraining / task decoder of the checkpoint (DNA PatchDecode: anatomix-dev-vit's up-projection "
                 "to its 32 dense feature channels, or an nnU-Net Primus trainer's segmentation head); nnFM "
                 "decodes with multi-scale token aggregation and a new head (a network built with "
                 "keep_up_projection=True keeps anatomix-dev-vit's)",
    "mask_token": "DNA Primus buffer that fills the patches removed by patch dropout in MAE-style pretraining; never "
                  "used in segmentation (patch_drop_rate 0) and not part of the encoder",
    "decoder.decode.": "segmentation decoder of an nnFM PrimusV2/V3 network; re-initialised for the new task",
    "decoder.seg_layers.": "segmentation head of an nnFM PrimusV2/V3 network; re-initialised for the new task",
    "decoder.": "MAE pretraining decoder (Eva blocks that reconstruct masked patches); not part of the encoder",
}


def is_primus_v2(keys: set, state: StateDict = None) -> bool:
    """The iterative tokenizer (``down_projection.stem.``) next to Eva: DNA PrimusV2 / V3, not nnssl's Primus-M
    (``down_projection.proj.*``) whose family record is tried after this one."""
    stem = any(k.startswith(("down_projection.stem.", "encoder.down_projection.stem.")) for k in keys)
    return stem and any(k.startswith(("eva.", "encoder.eva.")) for k in keys)


class _Mapped(dict):
    """The filter's mapped state dict, with the up-projection it holds provisionally: ``head`` {mapped name:
    checkpoint key} and ``dropped``, the very dict of dropped keys the filter returned (the load report's
    ``intentionally_dropped``: ``load_pretrained`` hands it to the report as it is), for the adapter to settle
    (:func:`_settle_up_projection`; tests/test_primus_v2.py checks the report of both outcomes)."""

    def __init__(self, dropped: Dict[str, str]):
        super().__init__()
        self.head: Dict[str, str] = {}
        self.dropped = dropped


def primus_v2_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """``down_projection.*``, ``eva.*``, ``register_tokens`` as they are (``encoder.`` prefix of an nnFM network
    removed); ``mask_token`` and decoders dropped with their reasons; ``up_projection.*`` (an nnFM network's
    ``encoder.up_projection.*`` too) provisionally both mapped and dropped with its reason, for the adapter to
    settle against the network; anything else is left for the strict comparison to report as unexpected."""
    dropped: Dict[str, str] = {}
    mapped = _Mapped(dropped)
    for key, value in state.items():
        name = key[len("encoder."):] if key.startswith("encoder.") else key
        if name.startswith(("down_projection.", "eva.")) or name == REGISTER_KEY:
            mapped[name] = value
            continue
        if name.startswith(HEAD_PREFIX):
            mapped[name], mapped.head[name], dropped[key] = value, key, _REASONS[HEAD_PREFIX]
            continue
        reason = next((why for prefix, why in _REASONS.items() if key.startswith(prefix)), None)
        if reason is None:
            mapped[key] = value
        else:
            dropped[key] = reason
    return mapped, dropped


def _resize_pos_embed(mapped: StateDict, module: torch.nn.Module, target: StateDict, checkpoint: Any) -> Dict[str, str]:
    source, wanted = mapped.get(POS_EMBED_KEY), target.get(POS_EMBED_KEY)
    if source is None or wanted is None or source.dim() != 3 or source.shape[-1] != wanted.shape[-1]:
        return {}  # nothing to do, or a width mismatch the strict comparison reports
    prefix = mapped[REGISTER_KEY].shape[1] if REGISTER_KEY in mapped else 0
    if prefix != int(getattr(module, "num_prefix_tokens", 0)):
        return {}  # another number of register tokens: the strict comparison reports register_tokens
    old_grid = checkpoint_token_grid(checkpoint, source.shape[1] - prefix)
    new_grid = list(getattr(module, "grid", []))
    if old_grid is None:
        if source.shape == wanted.shape:
            return {}
        raise CheckpointMismatchError(
            f"CheckpointMismatchError: {POS_EMBED_KEY} holds {source.shape[1] - prefix} patch tokens (after "
            f"{prefix} register rows), which is not a cubic pretraining grid, and the checkpoint's plans do not name "
            f"its patch, so it cannot be resized to the network's {new_grid} grid. Use a checkpoint pretrained on "
            f"cubic patches (anatomix-dev-vit: 128^3 -> 16^3 tokens) or an nnU-Net checkpoint (its plans give the "
            f"patch).")
    if list(old_grid) == new_grid:
        return {}
    grid_part = resize_pos_embed_3d(source[:, prefix:], old_grid, new_grid)
    mapped[POS_EMBED_KEY] = torch.cat([source[:, :prefix], grid_part], dim=1)
    return {POS_EMBED_KEY: f"token grid {'x'.join(map(str, old_grid))} -> {'x'.join(map(str, new_grid))} "
                           f"(trilinear, align_corners=False; {prefix} register rows kept)"}


def _adapt_stem_companions(mapped: StateDict, target: StateDict) -> Dict[str, str]:
    """Adapt the image-facing convolutions besides ``STEM_KEY`` (its alias, the skip projection and its alias) the
    way ``load_pretrained`` adapts ``STEM_KEY`` itself. Where the channel change cannot be mapped nothing is
    changed here: ``load_pretrained`` then refuses the stem with a ChannelMismatchError."""
    stem, wanted = mapped.get(STEM_KEY), target.get(STEM_KEY)
    if stem is None or wanted is None or stem.shape[1] == wanted.shape[1]:
        return {}
    have, need = stem.shape[1], wanted.shape[1]
    companions = [k for k, v in mapped.items() if k.startswith(_STEM_BLOCK) and k != STEM_KEY and v.dim() == 5
                  and k in target and v.shape[1] == have and target[k].shape[1] == need
                  and v.shape[0] == target[k].shape[0] and v.shape[2:] == target[k].shape[2:]]
    try:
        new = {key: adapt_stem_channels(mapped[key], need) for key in companions}
    except ValueError:
        return {}
    mapped.update({key: tensor for key, (tensor, _) in new.items()})
    return {key: how for key, (_, how) in new.items()}


def _settle_up_projection(mapped: StateDict, target: StateDict) -> None:
    """A network whose encoder holds an ``up_projection`` (keep_up_projection=True) loads the checkpoint's: its
    reasons are withdrawn from the dropped keys. Any other network leaves it out: removed from ``mapped``, the
    reasons stay."""
    head = getattr(mapped, "head", None)
    if not head:
        return
    if any(k.startswith(HEAD_PREFIX) for k in target):
        for key in head.values():
            mapped.dropped.pop(key, None)
    else:
        for name in head:
            del mapped[name]
    head.clear()


def adapt_primus_v2(mapped: StateDict, module: torch.nn.Module, target: StateDict, checkpoint: Any = None) -> Dict[str, str]:
    """The family's adapter (nnfm/weights/adapters.py contract): the up-projection loaded or left out as the network
    holds one or not, position embedding on the network's token grid, image-facing tokenizer convolutions on the
    network's input channels. Returns ``{key: how}``."""
    _settle_up_projection(mapped, target)
    adapted = _resize_pos_embed(mapped, module, target, checkpoint)
    adapted.update(_adapt_stem_companions(mapped, target))
    return adapted


# DNA PrimusV2 / V3 (anatomix-dev-vit, nnU-Net's PrimusV2/V3 trainers): before nnssl_primus, whose detection takes
# their eva.* keys too
register_family(CheckpointFamily(
    "primus_v2", is_primus_v2, "a PrimusV2/V3 network",
    primus_v2_filter, STEM_KEY, adapt_primus_v2, detect_before=("nnssl_primus",)))
