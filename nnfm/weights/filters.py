"""timm-style checkpoint filters (foreign key names -> the network's names), each with the checkpoint family
record that uses it (nnfm/weights/families.py): anatomix U-Net, nnssl Primus, DINOv3 / MedDINOv3 / nnFM ViTs.

A filter takes the unwrapped state dict and returns ``(mapped, intentionally_dropped)`` where
``intentionally_dropped`` maps each key it leaves out on purpose to the reason (never silent).
"""
import re
from typing import Dict, Tuple

import torch

from nnfm.weights.adapters import adapt_nnssl_primus, adapt_vit_qkv_bias
from nnfm.weights.families import CheckpointFamily, StateDict, has_prefix, register_family


def anatomix_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """``model.*`` as published; ``encoder.model.*`` from a full nnFM network (nnU-Net checkpoint)."""
    mapped, dropped = {}, {}
    for key, value in state.items():
        if key.startswith("encoder.model."):
            mapped[key[len("encoder."):]] = value
        elif key.startswith("model."):
            mapped[key] = value
        elif key.startswith("decoder."):
            dropped[key] = "segmentation head of an nnFM network; heads are re-initialised for the new task"
        else:
            mapped[key] = value  # left for the strict comparison to report as unexpected
    return mapped, dropped


_ANATOMIX_KEY = re.compile(r"^(encoder\.)?model\.\d+\.")


def is_anatomix(keys: set, state: StateDict) -> bool:
    """Mostly ``model.<idx>.*`` keys (``encoder.model.<idx>.*`` in a full nnFM network) and a 3D stem: the flat
    ``nn.Sequential`` of anatomix's ``Unet`` (neel-dey/anatomix anatomix/model/network.py), whatever its norm."""
    first = state.get("model.0.weight", state.get("encoder.model.0.weight", torch.empty(0)))
    return bool(keys) and sum(bool(_ANATOMIX_KEY.match(k)) for k in keys) >= len(keys) // 2 and first.dim() == 5


# anatomix-dev's layout is taken by this detection too: its family (filters_anatomix_dev.py) is tried first
register_family(CheckpointFamily(
    "anatomix_unet", is_anatomix, "the anatomix U-Net", anatomix_filter, "model.0.weight"))


# nnssl MAE keys outside the encoder (nnssl adaptation plan: key_to_encoder 'eva', key_to_stem 'down_projection')
_NNSSL_PRETRAINING_ONLY = {
    "decoder.": "nnssl MAE pretraining decoder (Eva blocks that reconstruct masked patches); not part of the encoder",
    "up_projection.": "nnssl MAE reconstruction head (PatchDecode to image intensities); the segmentation decoder is new",
    "mask_token": "nnssl MAE mask token, only used to fill masked patches during pretraining",
}


def nnssl_primus_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """nnssl Primus checkpoints keep ``down_projection.*`` + ``eva.*``; a full nnFM Primus network
    (``encoder.*`` + ``decoder.decode.*`` / ``decoder.seg_layers.*``) gives its encoder."""
    mapped, dropped = {}, {}
    for key, value in state.items():
        if key.startswith(("encoder.down_projection.", "encoder.eva.")):
            mapped[key[len("encoder."):]] = value
        elif key.startswith(("down_projection.", "eva.")):
            mapped[key] = value
        elif key.startswith(("decoder.decode.", "decoder.seg_layers.")):
            dropped[key] = "segmentation decoder of an nnFM Primus network; re-initialised for the new task"
        else:
            reason = next((why for prefix, why in _NNSSL_PRETRAINING_ONLY.items() if key.startswith(prefix)), None)
            if reason is None:
                mapped[key] = value  # left for the strict comparison to report as unexpected
            else:
                dropped[key] = reason
    return mapped, dropped


# PrimusV2/V3 files have eva.* too: their family (filters_primus_v2.py) is tried first
register_family(CheckpointFamily(
    "nnssl_primus", lambda k, s: has_prefix(k, "eva.", "down_projection.", "encoder.eva."),
    "an nnssl Primus-M 3D ViT", nnssl_primus_filter, "down_projection.proj.weight",
    adapt_nnssl_primus))


# ---- DINOv3 / MedDINOv3 ViTs -> timm's DINOv3 port (timm.models.eva, vit_*_patch16_dinov3[_qkvb]) ----------
_BIAS_MASK_REASON = ("folded into q_bias/v_bias: DINOv3's effective qkv bias is bias * bias_mask; the mask's K third "
                     "is 0, which timm's fixed zero k_bias reproduces (checked for every block)")
_MASK_TOKEN_REASON = ("iBOT mask token: only replaces masked patches during self-supervised pretraining; "
                      "segmentation never masks patches")
_SSL_HEAD_REASON = "DINO/iBOT projection head of self-supervised pretraining (SSL-only, not part of the backbone)"
_UP_PROJECTION_REASON = ("MedDINOv3 segmentation decoder of the task that network was trained on; the decoder "
                         "is re-initialised for the new task's classes")
_NNFM_DECODER_REASON = "decoder of an nnFM ViT network; it is re-initialised for the new task's classes"


def _timm_eva_rename(plain: StateDict) -> StateDict:
    """timm's own DINOv3 key mapping (``timm.models.eva.checkpoint_filter_fn``) for the plain keys.

    Only keys that timm maps by renaming reach it (``ls1.gamma`` -> ``gamma_1``, ``ls2.gamma`` ->
    ``gamma_2``, ``storage_tokens`` -> ``reg_token``, the rest unchanged); the keys timm would drop
    silently or handle without the bias mask are handled by ``dinov3_filter`` with a stated reason.
    """
    from types import SimpleNamespace

    from timm.models.eva import checkpoint_filter_fn

    stem = plain.get("patch_embed.proj.weight")
    shape = tuple(stem.shape) if stem is not None else (0, 0, 16, 16)
    # timm resamples the patch embedding only if the model's kernel differs; ours has the file's kernel
    target = SimpleNamespace(patch_embed=SimpleNamespace(proj=SimpleNamespace(weight=torch.empty(0, 0, *shape[2:]))))
    if "storage_tokens" not in plain:  # timm recognises DINOv3 files by this key
        plain = dict(plain, storage_tokens=torch.empty(0))
        renamed = checkpoint_filter_fn(plain, target)
        renamed.pop("reg_token")
        return renamed
    renamed = checkpoint_filter_fn(plain, target)
    if len(renamed) != len(plain):
        raise RuntimeError(f"timm's DINOv3 filter dropped {len(plain) - len(renamed)} key(s) nnFM expected it to rename")
    return renamed


def dinov3_key_map(state: StateDict) -> Tuple[StateDict, Dict[str, str], Dict[str, Tuple[str, ...]]]:
    """Bare DINOv3 backbone keys (official or MedDINOv3 without its prefix) -> timm Eva keys.

    Returns ``(mapped, intentionally_dropped, sources)`` where ``sources`` names, per file key,
    the network keys it became (so every key of the file is accounted for).
    """
    from nnfm.errors import CheckpointMismatchError

    mapped, dropped, sources = {}, {}, {}
    plain = {}
    for key, value in state.items():
        if key == "mask_token":
            dropped[key] = _MASK_TOKEN_REASON
        elif key.endswith("attn.qkv.bias_mask"):
            dropped[key] = _BIAS_MASK_REASON
        elif key.endswith("attn.qkv.bias"):
            mask = state.get(key + "_mask")
            effective = value.float() * (mask.float() if mask is not None else 1.0)
            q, k, v = effective.chunk(3, dim=-1)
            if torch.any(k != 0):
                raise CheckpointMismatchError(
                    f"CheckpointMismatchError: {key} has a non-zero K bias after its bias_mask "
                    f"(max |k| = {k.abs().max().item():.3g}); timm's DINOv3 attention fixes the K bias at 0, "
                    f"so this file cannot be loaded exactly. Is bias_mask missing or not DINOv3's [1, 0, 1] mask?")
            prefix = key[:-len("qkv.bias")]
            mapped[prefix + "q_bias"], mapped[prefix + "v_bias"] = q.to(value.dtype), v.to(value.dtype)
            sources[key] = (prefix + "q_bias", prefix + "v_bias")
        elif key == "rope_embed.periods":
            # timm recomputes periods in fp32; the file's (bf16-rounded in MedDINOv3) are what the weights saw
            mapped["rope.periods"] = value
            sources[key] = ("rope.periods",)
        else:
            plain[key] = value
    if plain:
        renamed = _timm_eva_rename(plain)
        # timm's filter keeps the order of the keys it renames
        for (old, _), (new, value) in zip(plain.items(), renamed.items()):
            mapped[new] = value
            sources[old] = (new,)
    return mapped, dropped, sources


def dinov3_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """Official DINOv3 backbone (bare state dict, qkv bias + bias_mask, storage tokens, RoPE periods)."""
    mapped, dropped, _ = dinov3_key_map(state)
    return mapped, dropped


def _split_prefixed(state: StateDict, prefix: str, dropped_prefixes: Dict[str, str]):
    inner, dropped, other = {}, {}, {}
    for key, value in state.items():
        reason = next((why for p, why in dropped_prefixes.items() if key.startswith(p)), None)
        if reason is not None:
            dropped[key] = reason
        elif key.startswith(prefix):
            inner[key[len(prefix):]] = value
        else:
            other[key] = value  # left for the strict comparison to report as unexpected
    return inner, dropped, other


def meddinov3_key_map(state: StateDict):
    """MedDINOv3 teacher: ``backbone.*`` (no qkv bias) + DINO/iBOT heads (dropped)."""
    inner, dropped, other = _split_prefixed(state, "backbone.", {"dino_head.": _SSL_HEAD_REASON,
                                                                 "ibot_head.": _SSL_HEAD_REASON})
    mapped, inner_dropped, sources = dinov3_key_map(inner)
    dropped.update({"backbone." + k: why for k, why in inner_dropped.items()})
    sources = {"backbone." + k: v for k, v in sources.items()}
    mapped.update(other)
    sources.update({k: (k,) for k in other})
    return mapped, dropped, sources


def meddinov3_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    mapped, dropped, _ = meddinov3_key_map(state)
    return mapped, dropped


def meddinov3_primus_key_map(state: StateDict):
    """A self-trained MedDINOv3 nnU-Net network: ``dino_encoder.*`` loads, ``up_projection.*`` is dropped."""
    inner, dropped, other = _split_prefixed(state, "dino_encoder.", {"up_projection.": _UP_PROJECTION_REASON,
                                                                     "decoder.": _UP_PROJECTION_REASON})
    mapped, inner_dropped, sources = dinov3_key_map(inner)
    dropped.update({"dino_encoder." + k: why for k, why in inner_dropped.items()})
    sources = {"dino_encoder." + k: v for k, v in sources.items()}
    mapped.update(other)
    sources.update({k: (k,) for k in other})
    return mapped, dropped, sources


def meddinov3_primus_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    mapped, dropped, _ = meddinov3_primus_key_map(state)
    return mapped, dropped


def nnfm_vit_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """An nnFM ViT network (``encoder.*`` in timm names, ``decoder.*``), e.g. from a previous nnFM training."""
    mapped, dropped = {}, {}
    for key, value in state.items():
        if key.startswith("encoder."):
            mapped[key[len("encoder."):]] = value
        elif key.startswith("decoder."):
            dropped[key] = _NNFM_DECODER_REASON
        else:
            mapped[key] = value
    return mapped, dropped


def vit_architecture(state: StateDict) -> Dict[str, object]:
    """A timm DINOv3 ViT's size from its state dict (timm names): embed_dim (cls token), depth (blocks), num_heads
    (RoPE: head_dim / 4 periods), num_reg_tokens and mlp_ratio; {} for a state dict without a cls token."""
    if "cls_token" not in state:
        return {}
    dim = int(state["cls_token"].shape[-1])
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    arch: Dict[str, object] = {"embed_dim": dim, "depth": max(blocks) + 1 if blocks else 0}
    periods = state.get("rope.periods")
    if periods is not None and periods.numel() and dim % (4 * periods.numel()) == 0:
        arch["num_heads"] = dim // (4 * periods.numel())
    arch["num_reg_tokens"] = int(state["reg_token"].shape[1]) if "reg_token" in state else 0
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and fc1.dim() == 2:
        ratio = round(fc1.shape[0] / dim, 4)
        arch["mlp_ratio"] = int(ratio) if float(ratio).is_integer() else ratio
    return arch


_VIT_STEM = "patch_embed.proj.weight"
_VIT = "a DINOv3 / MedDINOv3 ViT encoder"

# each ViT layout has its own prefix (backbone. / dino_encoder. / bare / encoder.): no detection takes another's
register_family(CheckpointFamily(
    "meddinov3_vit", lambda k, s: has_prefix(k, "dino_head.", "ibot_head.", "backbone.blocks."),
    _VIT, meddinov3_filter, _VIT_STEM, adapt_vit_qkv_bias, architecture=vit_architecture))
register_family(CheckpointFamily(
    "meddinov3_primus_nnunet", lambda k, s: has_prefix(k, "dino_encoder."),
    "the MedDINOv3 Primus_Multiscale network's encoder, " + _VIT, meddinov3_primus_filter, _VIT_STEM,
    adapt_vit_qkv_bias, architecture=vit_architecture))
register_family(CheckpointFamily(
    "dinov3_vit", lambda k, s: "rope_embed.periods" in k or ("cls_token" in k and has_prefix(k, "blocks.0.attn.qkv")),
    _VIT, dinov3_filter, _VIT_STEM, adapt_vit_qkv_bias, architecture=vit_architecture))
register_family(CheckpointFamily(
    "nnfm_vit", lambda k, s: "encoder.reg_token" in k or
    ("encoder.cls_token" in k and has_prefix(k, "decoder.decode.", "decoder.seg_layers.")),
    "an nnFM ViT network", nnfm_vit_filter, _VIT_STEM, architecture=vit_architecture))

VIT_FAMILIES = ("meddinov3_vit", "dinov3_vit", "meddinov3_primus_nnunet", "nnfm_vit")
