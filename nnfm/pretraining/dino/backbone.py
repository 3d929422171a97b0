"""A timm DINOv3 ViT with the mask token iBOT needs, and loading of official DINOv3 weights.

timm's ``Eva`` has no mask token (its DINOv3 filter drops ``mask_token``), so the wrapper owns one
with DINOv3's shape ``[1, D]``; it is exported under DINOv3's name. The forward pass is timm's
``forward_features`` with masked patch embeddings swapped for the mask token before the
position handling, as DINOv3 does.
"""
from typing import Dict, Optional

import timm
import torch
from torch import nn

from nnfm.errors import ConfigurationError
from nnfm.networks.dinov3_segmentation import keep_rope_periods


class MaskableDinoViT(nn.Module):
    def __init__(self, model_name: str = "vit_small_patch16_dinov3", **timm_kwargs):
        super().__init__()
        if "dinov3" not in model_name:
            raise ConfigurationError(f"'{model_name}' is not a timm DINOv3 ViT; use e.g. vit_small_patch16_dinov3 "
                                     f"or vit_base_patch16_dinov3 (tiny variants: pass embed_dim/depth/num_heads).")
        timm_kwargs.setdefault("num_classes", 0)
        self.vit = timm.create_model(model_name, pretrained=False, **timm_kwargs)
        keep_rope_periods(self.vit)  # as the segmentation network: checkpoints' periods load exactly
        periods = getattr(getattr(self.vit, "rope", None), "periods", None)
        if periods is not None:
            # exports store the periods in bfloat16 (MedDINOv3's layout): train with the values that are exported
            periods.copy_(periods.to(torch.bfloat16).to(periods.dtype))
        self.model_name = model_name
        self.embed_dim = self.vit.embed_dim
        self.patch_size = self.vit.patch_embed.patch_size[0]
        self.in_chans = self.vit.patch_embed.proj.in_channels
        self.num_prefix_tokens = self.vit.num_prefix_tokens
        self.mask_token = nn.Parameter(torch.zeros(1, self.embed_dim))

    def forward(self, images: torch.Tensor, masks: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """images [B, 1 or C, H, W] (H, W multiples of the patch size); masks [B, H/p, W/p] bool."""
        if images.shape[1] == 1 and self.in_chans != 1:
            images = images.expand(-1, self.in_chans, -1, -1)   # grey slice -> the RGB stem, as MedDINOv3
        vit = self.vit
        x = vit.patch_embed(images)                               # [B, h, w, D] (dynamic_img_size)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).view(1, 1, 1, -1), x)
        x, rope = vit._pos_embed(x)
        x = vit.norm_pre(x)
        for block in vit.blocks:
            x = block(x, rope=rope)
        x = vit.norm(x)
        return {"cls": x[:, 0], "patches": x[:, self.num_prefix_tokens:]}


def load_dinov3_weights(backbone: MaskableDinoViT, source) -> Dict[str, str]:
    """Official DINOv3 (bare state dict), MedDINOv3 (``teacher``/``backbone.*``) or an ``nnFM_pretrain dino`` export.

    ``source`` is a path or a registered weights name. The ViT loads through ``load_pretrained``, the path
    every nnFM network takes (family detection, timm's key mapping, a strict load with a report; non-zero
    q/v biases need the ``_qkvb`` variant). DINOv3's mask token (not part of timm's model) is copied after.
    """
    from nnfm.weights.checkpoint_io import read_state_dict
    from nnfm.weights.filters import VIT_FAMILIES
    from nnfm.weights.loading import load_pretrained

    report = load_pretrained(backbone.vit, source, family=VIT_FAMILIES)
    state, _ = read_state_dict(report.path)
    mask_token = state.get("mask_token", state.get("backbone.mask_token"))
    if mask_token is not None:
        backbone.mask_token.data.copy_(mask_token.reshape(1, -1).to(backbone.mask_token.dtype))
    return {"source": str(source), "path": report.path, "sha256": report.sha256, "family": report.family}
