"""Checkpoint families as records: how a published file is recognised, mapped and adapted, in one place.

A family is the key layout one group of authors' code writes (anatomix's ``model.*``, nnssl's ``eva.*`` +
``down_projection.*``, DINOv3's bare backbone, ...). ``load_pretrained`` detects the family of a state dict
with :func:`detect_family` (records are tried in registration order: more specific layouts first), maps it
with the record's ``filter``, lets its ``adapter`` change shapes whose meaning survives (position embeddings)
and adapts the input channels of ``stem_key``. An encoder's registry entry (nnfm/registry.py) lists the
families its network loads.
"""
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from nnfm.weights.adapters import Adapter, adapt_nnssl_primus, adapt_vit_qkv_bias
from nnfm.weights.filters_drasclr import drasclr_filter
from nnfm.weights.filters import (VIT_FAMILIES, Filter, StateDict, anatomix_filter, dinov3_filter, meddinov3_filter,
                                  meddinov3_primus_filter, nnfm_vit_filter, nnssl_primus_filter)
from nnfm.weights.filters_anatomix_dev import ANATOMIX_DEV_USE, check_anatomix_dev_preset, has_instance_norm_biases
from nnfm.weights.filters_lvmmed import adapt_lvmmed, lvmmed_filter
from nnfm.weights.filters_primus_v2 import STEM_KEY as _PRIMUS_V2_STEM, adapt_primus_v2, is_primus_v2, primus_v2_filter
from nnfm.weights.filters_resenc import STEM_KEY as _RESENC_STEM, adapt_nnssl_resenc, nnssl_resenc_filter


@dataclass(frozen=True)
class CheckpointFamily:
    """``detect(keys, state)`` says whether a state dict has this layout; ``filter`` maps it to the network's
    names (returning the keys it drops on purpose, with reasons); ``use`` names what fits it (error messages).
    ``filter`` None: recognised, so that a wrong-family error can say what the file is, but not loadable."""
    name: str
    detect: Callable[[set, StateDict], bool]
    use: str
    filter: Optional[Filter] = None
    stem_key: Optional[str] = None
    adapter: Optional[Adapter] = None
    # axis of the stem weight that holds the input channels (1 for a plain conv; 2 for DrasCLR's
    # location-conditioned conv, whose weight is [experts, out, in, k, k, k])
    stem_in_dim: int = 1


_FAMILIES: Dict[str, CheckpointFamily] = {}


def register_family(family: CheckpointFamily) -> CheckpointFamily:
    if family.name in _FAMILIES and _FAMILIES[family.name] != family:
        raise ValueError(f"Checkpoint family {family.name!r} is registered twice with different records.")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Optional[CheckpointFamily]:
    return _FAMILIES.get(name)


def families() -> List[CheckpointFamily]:
    return list(_FAMILIES.values())


def detect_family(state: StateDict) -> Optional[str]:
    """The name of the first registered family whose layout ``state`` has, or None."""
    keys = set(state)
    return next((f.name for f in _FAMILIES.values() if f.detect(keys, state)), None)


def _has(keys: set, *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


_ANATOMIX_KEY = re.compile(r"^(encoder\.)?model\.\d+\.")


def _is_anatomix(keys: set, state: StateDict) -> bool:
    first = state.get("model.0.weight", state.get("encoder.model.0.weight", torch.empty(0)))
    return bool(keys) and sum(bool(_ANATOMIX_KEY.match(k)) for k in keys) >= len(keys) // 2 and first.dim() == 5


_VIT_STEM = "patch_embed.proj.weight"
_VIT_USE = "a DINOv3 / MedDINOv3 ViT encoder (nnFMTrainer_MedDINOv3 / _DINOv3_B / _DINOv3_S)"

# order: layouts that contain another's keys come first (a MedDINOv3 teacher has backbone.blocks.*, ...)
register_family(CheckpointFamily(
    "meddinov3_vit", lambda k, s: _has(k, "dino_head.", "ibot_head.") or _has(k, "backbone.blocks."),
    _VIT_USE, meddinov3_filter, _VIT_STEM, adapt_vit_qkv_bias))
register_family(CheckpointFamily(
    "meddinov3_primus_nnunet", lambda k, s: _has(k, "dino_encoder."),
    "the MedDINOv3 Primus_Multiscale network's encoder: " + _VIT_USE, meddinov3_primus_filter, _VIT_STEM,
    adapt_vit_qkv_bias))
register_family(CheckpointFamily(
    "dinov3_vit", lambda k, s: "rope_embed.periods" in k or ("cls_token" in k and _has(k, "blocks.0.attn.qkv")),
    _VIT_USE, dinov3_filter, _VIT_STEM, adapt_vit_qkv_bias))
register_family(CheckpointFamily(
    "nnfm_vit", lambda k, s: "encoder.reg_token" in k or
    ("encoder.cls_token" in k and _has(k, "decoder.decode.", "decoder.seg_layers.")),
    "an nnFM ViT network (nnFMTrainer_MedDINOv3 / _DINOv3_*)", nnfm_vit_filter, _VIT_STEM))
# DNA PrimusV2 / V3 (anatomix-dev-vit, nnU-Net's PrimusV2/V3 trainers): before nnssl_primus, which has eva.* too
register_family(CheckpointFamily(
    "primus_v2", is_primus_v2, "a PrimusV2/V3 network (nnFMTrainer_AnatomixDevViT, nnFMTrainer_PrimusV2* / _PrimusV3*)",
    primus_v2_filter, _PRIMUS_V2_STEM, adapt_primus_v2))
register_family(CheckpointFamily(
    "nnssl_primus", lambda k, s: _has(k, "eva.", "down_projection.", "encoder.eva."),
    "nnFMTrainer_Primus (nnssl Primus-M 3D ViT)", nnssl_primus_filter, "down_projection.proj.weight",
    adapt_nnssl_primus))
register_family(CheckpointFamily(
    "drasclr", lambda k, s: _has(k, "encoder_q.", "encoder_k.") or any("._routing_fn.fc." in key for key in k),
    "the DrasCLR encoder: plan with nnFM_plan_and_preprocess -d ID -e drasclr and train with -tr nnFMTrainer_DrasCLR",
    drasclr_filter, "conv1.weight", stem_in_dim=2))
register_family(CheckpointFamily(
    "lvmmed_resnet50", lambda k, s: bool({"conv1.weight", "encoder.conv1.weight"} & k)
    and _has(k, "layer1.0.conv1.", "encoder.layer1.0.conv1."),
    "nnFMTrainer_LVMMed (LVM-Med 2D ResNet-50, torchvision layout)", lvmmed_filter, "conv1.weight", adapt_lvmmed))
# anatomix-dev (nnfm/weights/filters_anatomix_dev.py) before anatomix_unet, whose detection takes any
# model.<idx>.* layout: only the dev file's instance norm gives the convolutions biases
register_family(CheckpointFamily(
    "anatomix_dev_unet", lambda k, s: _is_anatomix(k, s) and has_instance_norm_biases(k), ANATOMIX_DEV_USE,
    anatomix_filter, "model.0.weight", check_anatomix_dev_preset))
register_family(CheckpointFamily(
    "anatomix_unet", _is_anatomix, "the anatomix U-Net: plan with nnFM_plan_and_preprocess -d ID -e anatomix and "
    "train with -tr nnFMTrainer", anatomix_filter, "model.0.weight"))


# nnssl / OpenMind ResEnc-L and every nnU-Net ResidualEncoderUNet state dict (encoder.stem.* + encoder.stages.*;
# a PlainConvUNet has no encoder.stem, a Primus has eva.*): issue 15

register_family(CheckpointFamily(
    "nnssl_resenc", lambda k, s: "encoder.stem.convs.0.conv.weight" in k and _has(k, "encoder.stages.")
    or "stem.convs.0.conv.weight" in k and _has(k, "stages.0.blocks."),
    "nnFMTrainer_ResEncL (nnssl / nnU-Net ResidualEncoderUNet)", nnssl_resenc_filter, _RESENC_STEM,
    adapt_nnssl_resenc))

assert set(VIT_FAMILIES) <= set(_FAMILIES)
