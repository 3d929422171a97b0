"""Optimiser for fine-tuning ViT encoders (DINOv3 / MedDINOv3 / Primus) in nnU-Net.

Shared by the 2D (``trainers/nnfm_vit_trainer.py``) and 3D ViT trainers:

- AdamW (betas 0.9, 0.98 as MedDINOv3/Primus), separate learning rates for the encoder and the
  rest (decoder, stem adaptations), optional layer-wise lr decay inside the encoder (BEiT/DINOv2
  style, see ``vit_param_groups``), no weight decay on biases, norms,
  LayerScale gammas and tokens;
- the schedule is nnFM's one fine-tuning schedule (``nnfm.training.schedule.FineTuneSchedule``: linear
  warm-up then polynomial or cosine decay, per epoch, each param group keeping its own base lr).

Everything works on any ``nn.Module`` whose encoder is reachable as an attribute; the layer id of an
encoder parameter comes from ``layer_id_fn(name)`` (for timm ViTs: ``vit_layer_id``).
"""
import re
from typing import Callable, Dict, Iterable, List, Optional

import torch
from torch import nn

ADAMW_BETAS = (0.9, 0.98)
_BLOCK = re.compile(r"^(?:.*\.)?blocks\.(\d+)\.")


def vit_layer_id(name: str, depth: int) -> int:
    """Layer id of a timm/DINOv3 ViT parameter: embeddings/tokens 0, ``blocks.i.*`` i + 1, the rest depth + 1."""
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    leaf = name.split(".")[0]
    if leaf in ("cls_token", "reg_token", "storage_tokens", "mask_token", "pos_embed", "patch_embed", "rope",
                "rope_embed", "down_projection", "register_tokens"):
        return 0
    return depth + 1


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norms, LayerScale gammas and learned tokens are not decayed (timm/DINOv3 convention)."""
    leaf = name.split(".")[-1]
    return param.ndim <= 1 or leaf in ("cls_token", "reg_token", "pos_embed", "storage_tokens", "mask_token") \
        or "token" in leaf or leaf.startswith("gamma")


def vit_param_groups(network: nn.Module, encoder: nn.Module, encoder_lr: float, decoder_lr: float,
                     weight_decay: float, layer_decay: Optional[float] = None, depth: Optional[int] = None,
                     layer_id_fn: Optional[Callable[[str], int]] = None) -> List[dict]:
    """Param groups for AdamW. Encoder groups carry ``is_encoder=True`` and ``layer_id``.

    ``layer_decay`` (e.g. 0.75; None or 1 = off) scales the encoder lr of layer id k by
    ``layer_decay ** (depth + 1 - k)`` (BEiT): the final norm trains at ``encoder_lr``, block i at
    ``encoder_lr * layer_decay ** (depth - i)``, the patch embedding and tokens at the smallest rate.
    Parameters outside ``encoder`` get ``decoder_lr``.
    """
    if depth is None:
        depth = len(getattr(encoder, "blocks", [])) or 1
    layer_id_fn = layer_id_fn or (lambda name: vit_layer_id(name, depth))
    encoder_names = {id(p): n for n, p in encoder.named_parameters()}
    groups: Dict[tuple, dict] = {}
    for name, param in network.named_parameters():
        if not param.requires_grad and id(param) not in encoder_names:
            continue
        decay = 0.0 if no_weight_decay(name, param) else weight_decay
        if id(param) in encoder_names:
            layer = layer_id_fn(encoder_names[id(param)])
            scale = 1.0 if not layer_decay or layer_decay == 1 else layer_decay ** (depth + 1 - layer)
            key = ("encoder", layer, decay)
            group = groups.setdefault(key, {"params": [], "lr": encoder_lr * scale, "weight_decay": decay,
                                            "is_encoder": True, "layer_id": layer, "lr_scale": scale})
        else:
            key = ("decoder", 0, decay)
            group = groups.setdefault(key, {"params": [], "lr": decoder_lr, "weight_decay": decay,
                                            "is_encoder": False, "layer_id": -1, "lr_scale": 1.0})
        group["params"].append(param)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0] != "decoder", k[1], k[2]))]


def build_adamw(groups: Iterable[dict], lr: float, betas=ADAMW_BETAS, eps: float = 1e-8,
                fused: Optional[bool] = None) -> torch.optim.AdamW:
    """AdamW over ``groups`` (each with its own lr / weight_decay); fused kernel on CUDA when available."""
    groups = list(groups)
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"]) and bool(groups)
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)
