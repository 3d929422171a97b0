"""Per-family adaptation of mapped checkpoint tensors to the target network (after filtering).

An adapter changes tensors whose meaning survives a change of shape (a position embedding on a
new patch grid) and returns ``{key: how}`` for the load report's ``adapted``. It drops a key only when
the key carries nothing the network could hold (all-zero biases of a network without biases), and says so.
Its type is ``nnfm.weights.families.Adapter``, the field of the family record that names it.
"""
from typing import Any, Dict, Tuple

import torch

from nnfm.errors import CheckpointMismatchError
from nnfm.weights.families import StateDict
from nnfm.weights.pos_embed import checkpoint_token_grid, cubic_grid, resize_pos_embed_3d

POS_EMBED_KEY = "eva.pos_embed"


def adapt_stem_channels(weight: torch.Tensor, channels: int, dim: int = 1) -> Tuple[torch.Tensor, str]:
    """Map a stem conv's input channels (axis ``dim``): 1 -> C (repeat / C), C -> 1 (sum), RGB -> C (mean,
    repeat / C). Raises ValueError for any other change. ``load_pretrained`` applies it to a family's
    ``stem_key``; adapters apply it to the other image-facing convolutions of a stem."""
    if dim != 1:  # e.g. DrasCLR's [experts, out, in, k, k, k]: adapt with the input axis in front, then put it back
        adapted, how = adapt_stem_channels(weight.movedim(dim, 1), channels)
        return adapted.movedim(1, dim).contiguous(), how
    have = weight.shape[1]
    if have == 1:
        repeated = weight.repeat(1, channels, *([1] * (weight.dim() - 2))) / channels
        return repeated, f"1 -> {channels} (repeat / {channels})"
    if channels == 1:
        return weight.sum(dim=1, keepdim=True), f"{have} -> 1 (sum)"
    if have == 3:
        mean = weight.mean(dim=1, keepdim=True)
        return mean.repeat(1, channels, *([1] * (weight.dim() - 2))) * (3 / channels), f"3 -> {channels} (RGB mean)"
    raise ValueError


def _target_grid(module: torch.nn.Module, num_tokens: int) -> list:
    grid = getattr(module, "grid", None)  # PrimusEncoder knows its token grid
    return list(grid) if grid is not None else cubic_grid(num_tokens)


def adapt_nnssl_primus(mapped: StateDict, module: torch.nn.Module, target: StateDict,
                       checkpoint: Any = None) -> Dict[str, str]:
    """Resize ``eva.pos_embed`` from the checkpoint's token grid to the network's grid whenever the grid
    SHAPE differs (5x7x5 and 7x5x5 hold the same 175 tokens at different places).

    The checkpoint's grid comes from its own metadata (nnU-Net plans or nnssl adaptation plan, see
    ``checkpoint_token_grid``), else from a cubic token count. Raises CheckpointMismatchError if neither
    tells it and the token counts differ.
    """
    source, wanted = mapped.get(POS_EMBED_KEY), target.get(POS_EMBED_KEY)
    if source is None or wanted is None or source.dim() != 3 or source.shape[-1] != wanted.shape[-1]:
        return {}  # nothing to do, or a width mismatch the strict comparison reports
    old_grid = checkpoint_token_grid(checkpoint, source.shape[1])
    try:
        new_grid = _target_grid(module, wanted.shape[1])
    except ValueError:
        new_grid = None
    if old_grid is None or new_grid is None:
        if source.shape == wanted.shape:
            return {}  # same token count and no grid known to differ: copied as is
        raise CheckpointMismatchError(
            f"CheckpointMismatchError: {POS_EMBED_KEY} has {source.shape[1]} tokens, which is not a cubic "
            f"pretraining grid, and the checkpoint's plans do not name its patch, so it cannot be resized to the "
            f"network's {wanted.shape[1]} tokens. Use a checkpoint pretrained on cubic patches (nnssl Primus: "
            f"160^3 -> 20^3 tokens) or an nnU-Net checkpoint (its plans give the patch).")
    if list(old_grid) == list(new_grid):
        return {}
    if int(torch.tensor(new_grid).prod()) != wanted.shape[1]:
        raise CheckpointMismatchError(f"CheckpointMismatchError: the network's grid {new_grid} does not hold its "
                                      f"{wanted.shape[1]} position-embedding tokens.")
    mapped[POS_EMBED_KEY] = resize_pos_embed_3d(source, old_grid, new_grid)
    return {POS_EMBED_KEY: f"token grid {'x'.join(map(str, old_grid))} -> {'x'.join(map(str, new_grid))} "
                           f"(trilinear, align_corners=False)"}



def adapt_vit_qkv_bias(mapped: StateDict, module: torch.nn.Module, target: StateDict,
                       checkpoint: Any = None) -> Dict[str, str]:
    """DINOv3 files fuse q/k/v biases (``qkv.bias`` + ``bias_mask``); timm's ``vit_*_dinov3`` has none and
    ``vit_*_dinov3_qkvb`` has ``q_bias``/``v_bias``. All-zero biases (an export of a bias-free ViT) are dropped
    for a bias-free network; non-zero ones raise CheckpointMismatchError naming the ``_qkvb`` variant, so
    trained biases are never lost silently (official DINOv3 ViT-S/B have them; MedDINOv3's ViT-B has none).
    """
    extra = [k for k in mapped if k.endswith(("attn.q_bias", "attn.v_bias")) and k not in target]
    if not extra:
        return {}
    if any(float(mapped[k].abs().max()) > 0 for k in extra):
        raise CheckpointMismatchError(
            f"CheckpointMismatchError: the checkpoint has non-zero attention q/v biases ({extra[0]}, ...) but the "
            f"network's ViT has none. Build the '_qkvb' timm variant (e.g. vit_small_patch16_dinov3_qkvb) so they "
            f"are not lost.")
    for key in extra:
        del mapped[key]
    return {key: "dropped: all zero, and the network's ViT has no q/v biases" for key in extra}
