"""3D Primus ViT (nnssl / OpenMind Primus-M layout) with MedDINOv3-style multi-scale decoding.

The encoder is dynamic_network_architectures' own ``PatchEmbed`` (``down_projection``, 8x8x8
patches) and ``Eva`` (``eva``), so its state_dict keys are exactly those of an nnssl checkpoint's
encoder part. Instead of Primus' single-level ``PatchDecode``, the (final-normed) tokens of
evenly spaced blocks (3, 7, 11, 15 for depth 16) are concatenated on the patch grid and decoded by
the shared ``PrimusStyleDecoder``.

Eva's learned position embedding and RoPE tables are built for one patch grid: the network takes
inputs of exactly ``input_shape`` (nnU-Net's patch size; its sliding window only sends such tiles).
"""
import math
from typing import List, Optional, Sequence

import torch
from dynamic_network_architectures.building_blocks.eva import Eva
from dynamic_network_architectures.building_blocks.patch_encode_decode import PatchEmbed
from torch import nn
from torch.utils.checkpoint import checkpoint

from nnfm.conventions import ZSCORE
from nnfm.errors import ConfigurationError, PatchSizeError
from nnfm.networks.stride_padding import check_divisible
from nnfm.networks.token_decoder import PrimusStyleDecoder, evenly_spaced_blocks, tokens_to_grid

PATCH_EMBED_SIZE = 8
# arch_kwargs presets. Primus-M = nnssl's EvaMAE encoder (dynamic_network_architectures' "M" config); drop path
# 0.2 as nnU-Net's own Primus trainers fine-tune with. "tiny" is for tests and CPU runs (no published weights).
PRIMUS_PRESETS = {
    "primus_m": {"embed_dim": 864, "depth": 16, "num_heads": 12, "num_aggregated_blocks": 4,
                 "drop_path_rate": 0.2, "init_values": 0.1, "scale_attn_inner": True},
    "primus_tiny": {"embed_dim": 48, "depth": 4, "num_heads": 2, "num_aggregated_blocks": 4,
                    "drop_path_rate": 0.0, "init_values": 0.1, "scale_attn_inner": True},
}


def check_rope_compatible(embed_dim: int, num_heads: int) -> None:
    """Eva's 3D RoPE splits each head in 3 axes x (sin, cos) pairs: head_dim / 1.5 must be a multiple of 4."""
    head_dim = embed_dim / num_heads
    if head_dim != int(head_dim) or (head_dim / 1.5) != int(head_dim / 1.5) or int(head_dim / 1.5) % 4:
        raise ConfigurationError(
            f"embed_dim={embed_dim} with num_heads={num_heads} gives head_dim {head_dim}; Eva's 3D rotary embedding "
            f"needs head_dim to be a multiple of 6 with head_dim/1.5 divisible by 4 (e.g. 24 or 72). "
            f"Choose embed_dim = num_heads * 24 * k.")


class PrimusEncoder(nn.Module):
    """``down_projection`` + ``eva`` under the names nnssl uses, returning the tokens of chosen blocks."""

    def __init__(self, input_channels: int, input_shape: Sequence[int], embed_dim: int, depth: int, num_heads: int,
                 drop_path_rate: float = 0.0, init_values: Optional[float] = 0.1, scale_attn_inner: bool = True):
        super().__init__()
        check_rope_compatible(embed_dim, num_heads)
        self.grid = [s // PATCH_EMBED_SIZE for s in input_shape]
        self.down_projection = PatchEmbed((PATCH_EMBED_SIZE,) * 3, input_channels, embed_dim)
        # Primus' own settings (mlp_ratio 8/3 SwiGLU, abs + rotary position embeddings, no register tokens)
        self.eva = Eva(embed_dim=embed_dim, depth=depth, num_heads=num_heads, ref_feat_shape=tuple(self.grid),
                       use_rot_pos_emb=True, use_abs_pos_emb=True, mlp_ratio=4 * 2 / 3,
                       drop_path_rate=drop_path_rate, init_values=init_values, scale_attn_inner=scale_attn_inner)

    @property
    def blocks(self) -> nn.ModuleList:
        """Eva's blocks, where ViT tools (memory estimate, layer decay) look for them."""
        return self.eva.blocks

    def forward(self, x: torch.Tensor, block_indices: Sequence[int]) -> List[torch.Tensor]:
        """Patch tokens (B, N, D) after ``eva.norm`` of each block in ``block_indices``, in row-major grid order."""
        x = self.down_projection(x).flatten(2).transpose(1, 2)  # (B, D, *grid) -> (B, N, D), as Primus' rearrange
        x, rope, _ = self.eva._pos_embed(x)  # abs pos embed + rope table (Eva's own code)
        wanted, outputs = set(block_indices), []
        for index, block in enumerate(self.eva.blocks[:max(block_indices) + 1]):
            if self.eva.grad_checkpointing and self.training:
                x = checkpoint(block, x, rope=rope, use_reentrant=False)
            else:
                x = block(x, rope=rope)
            if index in wanted:
                outputs.append(self.eva.norm(x))
        return outputs


class PrimusSegmentationNetwork(nn.Module):
    """nnssl Primus encoder (``self.encoder``) + multi-scale PrimusStyleDecoder (``self.decoder``).

    Built from plain kwargs (plans arch_kwargs). ``input_shape`` is the patch size; every axis must
    be divisible by 8. Deep supervision is not offered (one full-resolution output), as in nnU-Net's
    own Primus trainers.
    """
    # the one input convention its planner and input stage give the encoder (nnfm/conventions.py)
    input_norm = ZSCORE.name
    INPUT_NORMS = (ZSCORE.name,)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 input_shape: Sequence[int] = (64, 64, 64), embed_dim: int = 864, depth: int = 16,
                 num_heads: int = 12, num_aggregated_blocks: int = 4, drop_path_rate: float = 0.0,
                 init_values: Optional[float] = 0.1, scale_attn_inner: bool = True,
                 grad_checkpointing: bool = False, **unused_nnunet_kwargs):
        super().__init__()
        if deep_supervision:
            raise ConfigurationError("The Primus network has no deep supervision outputs; nnFMTrainer_Primus "
                                     "switches it off (enable_deep_supervision = False). Pass deep_supervision=False.")
        input_shape = [int(s) for s in input_shape]
        if len(input_shape) != 3:
            raise PatchSizeError(f"Primus is a 3D network; got a {len(input_shape)}D patch {input_shape}. "
                                 f"Use the 3d_fullres configuration of nnFMPlans_primus_m.")
        check_divisible(input_shape, PATCH_EMBED_SIZE, PATCH_EMBED_SIZE)
        self.input_shape = input_shape
        self.block_indices = evenly_spaced_blocks(depth, num_aggregated_blocks)
        self.encoder = PrimusEncoder(input_channels, input_shape, embed_dim, depth, num_heads, drop_path_rate,
                                     init_values, scale_attn_inner)
        self.encoder.eva.set_grad_checkpointing(grad_checkpointing)
        self.decoder = PrimusStyleDecoder(embed_dim * num_aggregated_blocks, num_classes, PATCH_EMBED_SIZE, ndim=3)
        self.decoder.deep_supervision = False  # the attribute nnU-Net's trainer toggles

    @property
    def num_tokens(self) -> int:
        return math.prod(self.encoder.grid)

    @property
    def num_layers(self) -> int:
        return len(self.encoder.eva.blocks)

    def encoder_layer_id(self, name: str) -> int:
        """Layer id for layer-wise lr decay of an encoder parameter name (relative to ``self.encoder``):
        stem and position embedding 0, ``eva.blocks.i`` i + 1, the final norm depth + 1."""
        if name.startswith(("down_projection.", "eva.pos_embed")):
            return 0
        if name.startswith("eva.blocks."):
            return int(name.split(".")[2]) + 1
        return self.num_layers + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if list(x.shape[2:]) != self.input_shape:
            raise PatchSizeError(
                f"This Primus network was built for patches of {self.input_shape} (its position embeddings and "
                f"rotary tables are fixed to a {self.encoder.grid} token grid) but got {list(x.shape[2:])}. "
                f"Predict with the plans the model was trained with, or build it with input_shape="
                f"{list(x.shape[2:])} (axes divisible by 8).")
        tokens = self.encoder(x, self.block_indices)
        return self.decoder(tokens_to_grid(tokens, self.encoder.grid))

    def initialize(self, module: nn.Module) -> None:
        """Called by get_network_from_plans: He init for the convs (as Primus does); Eva's linears keep their init."""
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# ---- registry entries (nnfm/registry.py) ------------------------------------------------------------------
from nnfm.conventions import Recipe  # noqa: E402
from nnfm.encoder_entry import EncoderEntry, register_encoder  # noqa: E402  (registered beside the network)

# nnU-Net's Primus recipe (MIC-DKFZ/nnUNet nnunetv2/training/nnUNetTrainer/primus/primus_trainers.py AbstractPrimus:
# AdamW (0.9, 0.98), lr 3e-4, wd 0.05, linear warm-up then poly, clip 1); a pretrained nnssl encoder at 1e-4
PRIMUS_RECIPE = Recipe("AdamW", 3e-4, 0.05, "poly", "MIC-DKFZ/nnUNet nnunetv2/training/nnUNetTrainer/primus/"
                       "primus_trainers.py", encoder_lr={"nnssl_primus": 1e-4}, betas=(0.9, 0.98), grad_clip=1.0,
                       full_warmup_fraction=0.05, deep_supervision=False)

_PRIMUS = dict(network_class=f"{PrimusSegmentationNetwork.__module__}.{PrimusSegmentationNetwork.__qualname__}",
               configuration="3d_fullres", families=("nnssl_primus",), token_stride=PATCH_EMBED_SIZE,
               min_axis=PATCH_EMBED_SIZE,
               input_convention=ZSCORE, recipe=PRIMUS_RECIPE)
register_encoder(EncoderEntry(
    name="primus_m", network_kwargs=PRIMUS_PRESETS["primus_m"],
    planner="nnfm_planners.nnfm_primus_planner.nnFMPrimusPlanner", trainer="nnFMTrainer_Primus",
    scratch_trainer="nnFMTrainer_Primus_scratch", weights="primus_m_openmind_mae",
    description="nnssl / OpenMind Primus-M (MAE on 114k brain MRI)", license="see AnonRes/PrimusM-OpenMind-MAE",
    status="loader tested on the published layout; trains at tiny size only on CPU", **_PRIMUS))
register_encoder(EncoderEntry(
    name="primus_tiny", network_kwargs=PRIMUS_PRESETS["primus_tiny"],
    planner="nnfm_planners.nnfm_primus_planner.nnFMPrimusPlanner", trainer="nnFMTrainer_PrimusTiny",
    scratch_trainer="nnFMTrainer_PrimusTiny_scratch", weights=None,
    description="Primus at test size (embed 48, depth 4): CPU runs and tests", license="-",
    status="trains + predicts (tests)", tiny=True, **_PRIMUS))
