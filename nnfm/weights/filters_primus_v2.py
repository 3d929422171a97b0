"""Checkpoint family ``primus_v2``: the state dict of a dynamic-network-architectures ``PrimusV2`` / ``PrimusV3``
module (iterative tokenizer ``down_projection.stem.*`` / ``.stages.*`` / ``.final_proj.*``, optional
``register_tokens``, ``eva.*``, ``up_projection.*``, ``mask_token``).

Files of this layout: anatomix-dev-vit.pth (neel-dey/anatomix, a bare state dict of the whole PrimusV2 module,
optionally with torch.compile's ``_orig_mod.`` prefix, which nnFM's reader strips), the ``network_weights`` of
nnU-Net's ``nnUNet_PrimusV2*_Trainer`` / ``nnUNet_PrimusV3*_Trainer`` checkpoints, and nnFM's own
``PrimusV2SegmentationNetwork`` (``encoder.*`` + ``decoder.*``). The filter keeps the encoder part and names
every key it leaves out with its reason; the adapter resizes the position embedding to the network's token
grid (register rows kept) and adapts the tokenizer's other input-channel convolutions along with its stem.
"""
from typing import Any, Dict, Tuple

import torch

from nnfm.errors import CheckpointMismatchError
from nnfm.weights.pos_embed import checkpoint_token_grid, resize_pos_embed_3d

StateDict = Dict[str, torch.Tensor]

POS_EMBED_KEY = "eva.pos_embed"
REGISTER_KEY = "register_tokens"
# the tokenizer's first convolution (DNA PrimusV2.keys_to_in_proj[0]); the family record's stem_key
STEM_KEY = "down_projection.stem.blocks.0.conv1.conv.weight"
# every convolution of the stem's first residual block sees the image: conv1 and, when the image has fewer
# channels than the stem's 32, the 1x1x1 skip projection; DNA's ConvDropoutNormReLU holds each twice
# (``conv`` and ``all_modules.0``: one tensor, two keys)
_STEM_BLOCK = "down_projection.stem.blocks.0."

_REASONS = {
    "up_projection.": "pretraining / task decoder of the checkpoint (DNA PatchDecode: anatomix-dev-vit's up-projection "
                      "to its 32 dense feature channels, or an nnU-Net Primus trainer's segmentation head); nnFM "
                      "decodes with multi-scale token aggregation and a new head",
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


def primus_v2_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """``down_projection.*``, ``eva.*``, ``register_tokens`` as they are (``encoder.`` prefix of an nnFM network
    removed); ``up_projection.*``, ``mask_token`` and decoders dropped with their reasons; anything else is left
    for the strict comparison to report as unexpected."""
    mapped, dropped = {}, {}
    for key, value in state.items():
        name = key[len("encoder."):] if key.startswith("encoder.") else key
        if name.startswith(("down_projection.", "eva.")) or name == REGISTER_KEY:
            mapped[name] = value
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
    from nnfm.weights.loading import adapt_stem_channels  # loading imports the family records

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


def adapt_primus_v2(mapped: StateDict, module: torch.nn.Module, target: StateDict, checkpoint: Any = None) -> Dict[str, str]:
    """The family's adapter (nnfm/weights/adapters.py contract): position embedding on the network's token grid,
    image-facing tokenizer convolutions on the network's input channels. Returns ``{key: how}``."""
    adapted = _resize_pos_embed(mapped, module, target, checkpoint)
    adapted.update(_adapt_stem_companions(mapped, target))
    return adapted
