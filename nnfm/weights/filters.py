"""Family detection and timm-style checkpoint filters (foreign key names -> the network's names).

A filter takes the unwrapped state dict and returns ``(mapped, intentionally_dropped)`` where
``intentionally_dropped`` maps each key it leaves out on purpose to the reason (never silent).
"""
import re
from typing import Callable, Dict, Optional, Tuple

import torch

StateDict = Dict[str, torch.Tensor]
Filter = Callable[[StateDict], Tuple[StateDict, Dict[str, str]]]

# which trainer / encoder fits each family (used in wrong-family errors)
FAMILY_USE = {
    "anatomix_unet": "nnFMTrainer (anatomix 3D U-Net)",
    "dinov3_vit": "a DINOv3 ViT encoder (MedDINOv3 path), not the anatomix U-Net",
    "meddinov3_vit": "a DINOv3/MedDINOv3 ViT encoder, not the anatomix U-Net",
    "meddinov3_primus_nnunet": "the MedDINOv3 Primus_Multiscale segmentation network",
    "nnssl_primus": "nnFMTrainer_Primus (nnssl Primus-M 3D ViT), not the anatomix U-Net",
    "lvmmed_resnet50": "a 2D ResNet-50 encoder (LVM-Med), not the anatomix U-Net",
    "drasclr": "the DrasCLR 3D encoder, not the anatomix U-Net",
}

_ANATOMIX_KEY = re.compile(r"^(encoder\.)?model\.\d+\.")


def detect_family(state: StateDict) -> Optional[str]:
    keys = set(state)

    def has(prefix):
        return any(k.startswith(prefix) for k in keys)

    if has("dino_head.") or has("ibot_head.") or (has("backbone.") and has("backbone.blocks.")):
        return "meddinov3_vit"
    if has("dino_encoder."):
        return "meddinov3_primus_nnunet"
    if "rope_embed.periods" in keys or ("cls_token" in keys and has("blocks.0.attn.qkv")):
        return "dinov3_vit"
    if has("eva.") or has("down_projection.") or has("encoder.eva."):
        return "nnssl_primus"
    if has("encoder_q.") or has("encoder_k."):
        return "drasclr"
    if "conv1.weight" in keys and has("layer1.0.conv1."):
        return "lvmmed_resnet50"
    if keys and sum(bool(_ANATOMIX_KEY.match(k)) for k in keys) >= len(keys) // 2 and \
            state.get("model.0.weight", state.get("encoder.model.0.weight", torch.empty(0))).dim() == 5:
        return "anatomix_unet"
    return None


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


# nnssl MAE keys outside the encoder (nnssl adaptation plan: key_to_encoder 'eva', key_to_stem 'down_projection')
_NNSSL_PRETRAINING_ONLY = {
    "decoder.": "nnssl MAE pretraining decoder (Eva blocks that reconstruct masked patches); not part of the encoder",
    "up_projection.": "nnssl MAE reconstruction head (PatchDecode to image intensities); the segmentation decoder is new",
    "mask_token": "nnssl MAE mask token, only used to fill masked patches during pretraining",
}


def nnssl_primus_filter(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """nnssl Primus checkpoints keep ``down_projection.*`` + ``eva.*``; a full nnFM Primus network
    (``encoder.*`` + ``decoder.decode.*``) gives its encoder."""
    mapped, dropped = {}, {}
    for key, value in state.items():
        if key.startswith(("encoder.down_projection.", "encoder.eva.")):
            mapped[key[len("encoder."):]] = value
        elif key.startswith(("down_projection.", "eva.")):
            mapped[key] = value
        elif key.startswith("decoder.decode."):
            dropped[key] = "segmentation decoder of an nnFM Primus network; re-initialised for the new task"
        else:
            reason = next((why for prefix, why in _NNSSL_PRETRAINING_ONLY.items() if key.startswith(prefix)), None)
            if reason is None:
                mapped[key] = value  # left for the strict comparison to report as unexpected
            else:
                dropped[key] = reason
    return mapped, dropped


FILTERS: Dict[str, Filter] = {"anatomix_unet": anatomix_filter, "nnssl_primus": nnssl_primus_filter}
# the input conv whose channels may be adapted, per family
STEM_KEYS: Dict[str, str] = {"anatomix_unet": "model.0.weight", "nnssl_primus": "down_projection.proj.weight"}
