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

from nnfm.errors import CheckpointMismatchError, ConfigurationError


class MaskableDinoViT(nn.Module):
    def __init__(self, model_name: str = "vit_small_patch16_dinov3", **timm_kwargs):
        super().__init__()
        if "dinov3" not in model_name:
            raise ConfigurationError(f"'{model_name}' is not a timm DINOv3 ViT; use e.g. vit_small_patch16_dinov3 "
                                     f"or vit_base_patch16_dinov3 (tiny variants: pass embed_dim/depth/num_heads).")
        timm_kwargs.setdefault("num_classes", 0)
        self.vit = timm.create_model(model_name, pretrained=False, **timm_kwargs)
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
    """Official DINOv3 (bare state dict), MedDINOv3 (``teacher``/``backbone.*``) or our own export.

    ``source`` is a path or a registered weights name. Mapping to timm names is timm's own
    ``eva.checkpoint_filter_fn``; the load is strict (only the non-persistent RoPE periods are absent).
    """
    from timm.models.eva import checkpoint_filter_fn
    from nnfm.weights.checkpoint_io import read_state_dict
    from nnfm.weights.loading import resolve_checkpoint

    path, sha256 = resolve_checkpoint(source)
    state, _ = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if "storage_tokens" not in state:
        raise CheckpointMismatchError(f"{path} is not a DINOv3 ViT checkpoint (no 'storage_tokens'); pass official "
                                      f"DINOv3 / MedDINOv3 weights or an nnFM_pretrain dino export.")
    has_qkv_bias = hasattr(backbone.vit.blocks[0].attn, "q_bias") and backbone.vit.blocks[0].attn.q_bias is not None
    biases = [v for k, v in state.items() if k.endswith("attn.qkv.bias")]
    if biases and not has_qkv_bias and any(float(b.abs().max()) > 0 for b in biases):
        raise CheckpointMismatchError(f"{path} has non-zero qkv biases but {backbone.model_name} has none; use the "
                                      f"'{backbone.model_name}_qkvb' variant so they are not lost.")
    mapped = checkpoint_filter_fn(state, backbone.vit)
    missing, unexpected = backbone.vit.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(f"{path} does not fit {backbone.model_name} with these sizes: missing "
                                      f"{sorted(missing)[:6]}, unexpected {sorted(unexpected)[:6]}. Match --model and "
                                      f"--embed-dim/--depth/--num-heads to the checkpoint.")
    if "mask_token" in state:
        backbone.mask_token.data.copy_(state["mask_token"].reshape(1, -1).to(backbone.mask_token.dtype))
    return {"source": str(source), "path": str(path), "sha256": sha256}
