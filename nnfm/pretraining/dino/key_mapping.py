"""timm DINOv3 names -> DINOv3 names (the inverse of timm's ``eva.checkpoint_filter_fn`` for DINOv3),
and the MedDINOv3 checkpoint layout ``{'teacher': {'backbone.*', 'dino_head.*', 'ibot_head.*'}}``.

DINOv3 key order per block: norm1, attn.qkv(.bias, .bias_mask), attn.proj, ls1, norm2, mlp, ls2.
timm keeps q and v biases apart (``q_bias``/``v_bias``, k fixed at zero); DINOv3 fuses them into
``qkv.bias`` with a ``bias_mask`` that zeroes the k part.
"""
import re
from typing import Dict, Optional

import torch

from nnfm.errors import CheckpointMismatchError

StateDict = Dict[str, torch.Tensor]
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_BLOCK_RENAMES = {"gamma_1": "ls1.gamma", "gamma_2": "ls2.gamma"}
_BLOCK_ORDER = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.qkv.bias_mask",
                "attn.proj.weight", "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias",
                "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma")
_TOP = {"cls_token": "cls_token", "reg_token": "storage_tokens", "patch_embed.proj.weight": "patch_embed.proj.weight",
        "patch_embed.proj.bias": "patch_embed.proj.bias", "norm.weight": "norm.weight", "norm.bias": "norm.bias"}


def timm_to_dinov3(timm_state: StateDict, mask_token: Optional[torch.Tensor] = None,
                   rope_periods: Optional[torch.Tensor] = None) -> StateDict:
    """Rename a timm DINOv3 ``Eva`` state dict to DINOv3's ``DinoVisionTransformer`` keys, in DINOv3's order."""
    top, blocks = {}, {}
    for key, value in timm_state.items():
        match = _BLOCK.match(key)
        if match:
            index, name = int(match.group(1)), match.group(2)
            blocks.setdefault(index, {})[_BLOCK_RENAMES.get(name, name)] = value
        elif key in _TOP:
            top[_TOP[key]] = value
        elif key.startswith("head.") or key.startswith("fc_norm."):
            continue   # classifier of a timm model built with num_classes > 0: not part of the backbone
        else:
            raise CheckpointMismatchError(f"timm key '{key}' has no DINOv3 counterpart; is this a timm DINOv3 ViT?")
    out: StateDict = {"cls_token": top["cls_token"], "storage_tokens": top["storage_tokens"]}
    if mask_token is not None:
        out["mask_token"] = mask_token.reshape(1, -1)
    out["patch_embed.proj.weight"] = top["patch_embed.proj.weight"]
    out["patch_embed.proj.bias"] = top["patch_embed.proj.bias"]
    if rope_periods is not None:
        out["rope_embed.periods"] = rope_periods
    for index in sorted(blocks):
        block = _fuse_qkv_bias(blocks[index])
        unknown = set(block) - set(_BLOCK_ORDER)
        if unknown:
            raise CheckpointMismatchError(f"block {index}: keys {sorted(unknown)} have no DINOv3 counterpart")
        out.update({f"blocks.{index}.{name}": block[name] for name in _BLOCK_ORDER if name in block})
    out["norm.weight"], out["norm.bias"] = top["norm.weight"], top["norm.bias"]
    return out


def _fuse_qkv_bias(block: StateDict) -> StateDict:
    if "attn.q_bias" not in block:
        return block
    block = dict(block)
    q, v = block.pop("attn.q_bias"), block.pop("attn.v_bias")
    block["attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    block["attn.qkv.bias_mask"] = torch.cat([torch.ones_like(q), torch.zeros_like(q), torch.ones_like(v)])
    return block


def backbone_to_dinov3(backbone) -> StateDict:
    """A ``MaskableDinoViT`` as DINOv3 keys; RoPE periods in bfloat16 as in MedDINOv3's file."""
    state = {k: v.detach().cpu().clone() for k, v in backbone.vit.state_dict().items() if k != "rope.periods"}
    periods = getattr(getattr(backbone.vit, "rope", None), "periods", None)
    return timm_to_dinov3(state, backbone.mask_token.detach().cpu().clone(),
                          None if periods is None else periods.detach().cpu().to(torch.bfloat16))


def meddinov3_checkpoint(backbone, dino_head, ibot_head=None) -> Dict[str, StateDict]:
    """The MedDINOv3 layout: ``{'teacher': {'backbone.<DINOv3 key>', 'dino_head.*', 'ibot_head.*'}}``."""
    teacher = {f"backbone.{k}": v for k, v in backbone_to_dinov3(backbone).items()}
    teacher.update({f"dino_head.{k}": v.detach().cpu().clone() for k, v in dino_head.state_dict().items()})
    if ibot_head is not None:
        teacher.update({f"ibot_head.{k}": v.detach().cpu().clone() for k, v in ibot_head.state_dict().items()})
    return {"teacher": teacher}
