"""PrimusV2 / PrimusV3 3D ViTs (and the anatomix-dev-vit encoder built on PrimusV2) with multi-scale decoding.

The encoder is assembled from dynamic-network-architectures 0.4.4's own building blocks exactly as its
``PrimusV2`` / ``PrimusV3`` classes assemble them (dynamic_network_architectures/architectures/primus.py):

* ``down_projection``: the iterative residual tokenizer, ``PatchEmbed_deeper`` (PrimusV2: base 32 features,
  one basic residual block per level, 32 -> 32 -> 64 -> 128 channels at strides 1, 2, 4, 8, then a 1x1x1
  projection to ``embed_dim``) or ``PatchEmbedDeeperControlled`` (PrimusV3: 32 -> 64 -> 256 -> 1024 channels,
  LeakyReLU, skip projections of every level onto the token grid with learnable scales);
* ``register_tokens`` (optional, prepended to the patch tokens before ``eva`` and removed after it) and
  ``eva`` (DNA's ``Eva``: abs + 3D rotary position embeddings, SwiGLU, LayerScale ``init_values``, post-attention
  norm ``scale_attn_inner``), with the position embedding's first ``num_register_tokens`` rows for the
  registers, as in DNA's ``Primus.forward``.

The state_dict keys are therefore those of a DNA ``PrimusV2`` / ``PrimusV3`` module without ``up_projection``
(unless ``keep_up_projection``, below) and ``mask_token``: the anatomix-dev-vit checkpoint (neel-dey/anatomix
anatomix/model/vit3d/architectures.py, a PrimusV2 with 8 register tokens, QK-norm and InstanceNorm eps 1e-2 in the
tokenizer) and the ``network_weights`` of nnU-Net's own ``nnUNet_PrimusV2*_Trainer`` / ``nnUNet_PrimusV3*_Trainer``
load into it (family ``primus_v2``, nnfm/weights/filters_primus_v2.py). Instead of Primus' single-level ``PatchDecode``,
the final-normed patch tokens of evenly spaced blocks are concatenated on the token grid and decoded by the
shared ``PrimusStyleDecoder`` (MedDINOv3's multi-scale token aggregation, nnfm/networks/token_decoder.py).

``keep_up_projection=True`` also builds DNA Primus' ``up_projection`` (its own ``PatchDecode``, 32 output channels)
inside the encoder, so that anatomix-dev-vit's contrastively trained output head loads with it: its 32-channel
full-resolution output is what anatomix uses as features (``dense_features``, ``nnFM_extract_features``) and the
segmentation head then reads it too (see ``PrimusV2SegmentationNetwork``).

The position embedding and RoPE tables are built for one token grid: the network takes inputs of exactly
``input_shape`` (nnU-Net's patch; its sliding window only sends such tiles).
"""
import math
from typing import List, Optional, Sequence

import torch
from dynamic_network_architectures.building_blocks.eva import Eva
from dynamic_network_architectures.building_blocks.patch_encode_decode import (LayerNormNd, PatchDecode,
                                                                               PatchEmbed_deeper,
                                                                               PatchEmbedDeeperControlled)
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.utils.checkpoint import checkpoint

from nnfm.errors import ConfigurationError, PatchSizeError
from nnfm.conventions import NNUNET, WINDOW01, Recipe
from nnfm.networks.intensity_window import IntensityWindow
from nnfm.networks.primus_segmentation import PRIMUS_RECIPE, check_rope_compatible
from nnfm.networks.stride_padding import check_divisible
from nnfm.networks.token_decoder import PrimusStyleDecoder, evenly_spaced_blocks, tokens_to_grid

# both tokenizers stride 2 three times: 8x8x8 voxels per token (DNA's PatchEmbed_deeper is hard-wired to it)
TOKEN_STRIDE = 8
# the tokenizers' last stage instance-normalises a (patch / 8) grid: one token per axis everywhere would leave a
# single voxel to normalise (an error in training), so every axis is at least two tokens
MIN_AXIS = 16
TOKENIZERS = ("v2", "v3")
INPUT_NORMS = (NNUNET.name, WINDOW01.name)
# PrimusV3's tokenizer channels per level (DNA PrimusV3 default ch_per_level)
V3_CHANNELS = (32, 64, 256, 1024)
# the kept up_projection's output channels: anatomix-dev-vit's num_classes=32 (its dense feature channels)
UP_PROJECTION_CHANNELS = 32
# what follows the kept up_projection (anatomix's ``out_norm``: anatomix/model/vit3d/architectures.py build_out_norm;
# anatomix-dev-vit: "demean", each channel minus its spatial mean over the input; "none": DNA Primus' plain output)
UP_PROJECTION_OUT_NORMS = ("demean", "none")

# DNA 0.4.4 _PRIMUS_CONFIGS: (depth, heads, embed_dim) per size
_SIZES = {"S": (12, 6, 396), "B": (12, 12, 792), "M": (16, 12, 864), "L": (24, 16, 1056)}
# nnU-Net 2.8.1 nnunetv2/training/nnUNetTrainer/primus/primus_trainers.py builds every PrimusV2* / PrimusV3*
# with drop_path_rate=0.2, scale_attn_inner=True, init_values=0.1 (no register tokens, no QK-norm)
_NNUNET_PRIMUS = {"drop_path_rate": 0.2, "init_values": 0.1, "scale_attn_inner": True, "num_register_tokens": 0,
                  "qk_norm": False, "tokenizer_norm_eps": 1e-5, "num_aggregated_blocks": 4, "input_norm": NNUNET.name}

PRIMUS_V2_PRESETS = {
    f"primus_{version}_{size.lower()}": dict(_NNUNET_PRIMUS, tokenizer=version, depth=depth, num_heads=heads,
                                               embed_dim=dim)
    for version in TOKENIZERS for size, (depth, heads, dim) in _SIZES.items()
}
# anatomix-dev-vit: neel-dey/anatomix ANATOMIX_VARIANTS['anatomix-dev-vit'] (layout anatomix_dev_vit.json; the same
# values are the ``--vit-*`` defaults of anatomix/registration/registration_infrastructure/cli.py):
# PrimusV2 S-sized (embed 396, depth 12, 6 heads), 8 register tokens (init std 0.02), QK-norm, tokenizer
# InstanceNorm eps 1e-2, init_values 0.1, scale_attn_inner, pretrained on 128^3 crops. Its fine-tuning
# drop path is nnU-Net's Primus value (anatomix publishes no ViT fine-tuning recipe).
PRIMUS_V2_PRESETS["anatomix_dev_vit"] = dict(
    tokenizer="v2", embed_dim=396, depth=12, num_heads=6, num_register_tokens=8, qk_norm=True,
    tokenizer_norm_eps=1e-2, register_init_std=0.02, init_values=0.1, scale_attn_inner=True, drop_path_rate=0.2,
    num_aggregated_blocks=4, input_norm=WINDOW01.name)
# the same architecture at test size (CPU runs, tests): no published weights
PRIMUS_V2_PRESETS["anatomix_dev_vit_tiny"] = dict(
    PRIMUS_V2_PRESETS["anatomix_dev_vit"], embed_dim=48, depth=4, num_heads=2, num_register_tokens=2,
    drop_path_rate=0.0)


def _check_tokenizer(tokenizer: str, tokenizer_channels) -> None:
    if tokenizer not in TOKENIZERS:
        raise ConfigurationError(f"tokenizer must be one of {TOKENIZERS} (PrimusV2's PatchEmbed_deeper or "
                                 f"PrimusV3's PatchEmbedDeeperControlled), got {tokenizer!r}.")
    if tokenizer_channels is not None and (tokenizer != "v3" or len(tokenizer_channels) != 4):
        raise ConfigurationError(f"tokenizer_channels (channels of the stem and the three stride-2 levels) apply "
                                 f"to the v3 tokenizer only and need 4 entries, got {tokenizer_channels} for "
                                 f"tokenizer {tokenizer!r}. PrimusV2's tokenizer has fixed channels 32/32/64/128.")


class PrimusV2Encoder(nn.Module):
    """``down_projection`` + ``register_tokens`` + ``eva`` (+ ``up_projection``) under DNA Primus' names; returns
    the patch tokens of chosen blocks.

    ``input_shape`` (3 ints, each divisible by 8) fixes the token grid ``grid = input_shape / 8`` of the position
    embedding (``eva.pos_embed``: (1, num_register_tokens + prod(grid), embed_dim)) and the RoPE tables.
    ``qk_norm`` adds a per-head LayerNorm on queries and keys (anatomix: timm's ``q_norm`` / ``k_norm`` slots);
    ``tokenizer_norm_eps`` is the eps of every InstanceNorm3d of the tokenizer (anatomix ``in_eps``).
    ``keep_up_projection`` adds DNA Primus' ``up_projection`` (``PatchDecode``, 32 output channels) and
    ``up_projection_out_norm`` what follows it (anatomix ``out_norm``): see :meth:`up_project`.
    """

    def __init__(self, input_channels: int, input_shape: Sequence[int], tokenizer: str = "v2",
                 embed_dim: int = 396, depth: int = 12, num_heads: int = 6, num_register_tokens: int = 0,
                 qk_norm: bool = False, tokenizer_norm_eps: float = 1e-5,
                 tokenizer_channels: Optional[Sequence[int]] = None, drop_path_rate: float = 0.0,
                 init_values: Optional[float] = 0.1, scale_attn_inner: bool = True,
                 register_init_std: float = 1e-6, keep_up_projection: bool = False,
                 up_projection_out_norm: str = "demean"):
        super().__init__()
        _check_tokenizer(tokenizer, tokenizer_channels)
        if up_projection_out_norm not in UP_PROJECTION_OUT_NORMS:
            raise ConfigurationError(f"up_projection_out_norm must be one of {UP_PROJECTION_OUT_NORMS} (anatomix's "
                                     f"out_norm after the up_projection: 'demean' for anatomix-dev-vit, 'none' for "
                                     f"DNA Primus' plain output), got {up_projection_out_norm!r}.")
        check_rope_compatible(embed_dim, num_heads)
        self.grid = [int(s) // TOKEN_STRIDE for s in input_shape]
        self.num_prefix_tokens = int(num_register_tokens)
        if tokenizer == "v2":  # DNA PrimusV2.__init__
            self.down_projection = PatchEmbed_deeper(
                input_channels=input_channels, embed_dim=embed_dim, base_features=32, depth_per_level=(1, 1, 1),
                embed_proj_3x3x3=False, embed_block_style="residual", embed_block_type="basic")
        else:  # DNA PrimusV3.__init__ defaults
            self.down_projection = PatchEmbedDeeperControlled(
                input_channels=input_channels, embed_dim=embed_dim, depth_per_level=(1, 1, 1),
                ch_per_level=tuple(tokenizer_channels or V3_CHANNELS), add_skips=True, nonlin=nn.LeakyReLU)
        self.down_projection.apply(InitWeights_He(1e-2))  # as DNA's PrimusV2 / V3 do after building it
        for module in self.down_projection.modules():
            if isinstance(module, nn.InstanceNorm3d):
                module.eps = float(tokenizer_norm_eps)
        # DNA Primus.__init__: Primus' Eva settings (SwiGLU mlp_ratio 8/3, abs + rotary position embeddings)
        self.eva = Eva(embed_dim=embed_dim, depth=depth, num_heads=num_heads, ref_feat_shape=tuple(self.grid),
                       num_reg_tokens=self.num_prefix_tokens, use_rot_pos_emb=True, use_abs_pos_emb=True,
                       mlp_ratio=4 * 2 / 3, drop_path_rate=drop_path_rate, init_values=init_values,
                       scale_attn_inner=scale_attn_inner)
        if qk_norm:  # anatomix's Primus: LayerNorm(head_dim) swapped into timm's q_norm / k_norm
            head_dim = embed_dim // num_heads
            for block in self.eva.blocks:
                block.attn.q_norm = nn.LayerNorm(head_dim)
                block.attn.k_norm = nn.LayerNorm(head_dim)
        if self.num_prefix_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, self.num_prefix_tokens, embed_dim))
            nn.init.normal_(self.register_tokens, std=register_init_std)
        else:
            self.register_tokens = None
        # DNA Primus.__init__ (PrimusV2 / V3 alike): PatchDecode(patch_embed_size, embed_dim, num_classes,
        # norm=LayerNormNd, activation=nn.GELU), He init; anatomix-dev-vit's num_classes is 32 (stages 396 -> 216
        # -> 120 -> 32 at embed 396). Registered last: the parameter order of networks without it is unchanged.
        self.up_projection_out_norm = up_projection_out_norm
        if keep_up_projection:
            self.up_projection = PatchDecode((TOKEN_STRIDE,) * 3, embed_dim, UP_PROJECTION_CHANNELS,
                                             norm=LayerNormNd, activation=nn.GELU)
            self.up_projection.apply(InitWeights_He(1e-2))
        else:
            self.up_projection = None

    @property
    def blocks(self) -> nn.ModuleList:
        """Eva's blocks, where ViT tools (memory estimate, layer decay) look for them."""
        return self.eva.blocks

    def forward(self, x: torch.Tensor, block_indices: Sequence[int]) -> List[torch.Tensor]:
        """(B, C, *input_shape) -> patch tokens (B, prod(grid), D) after ``eva.norm`` of each block in
        ``block_indices``, row-major grid order, register tokens removed (as DNA ``Primus.forward``)."""
        x = self.down_projection(x).flatten(2).transpose(1, 2)  # (B, D, *grid) -> (B, N, D)
        if self.register_tokens is not None:
            x = torch.cat((self.register_tokens.expand(x.shape[0], -1, -1), x), dim=1)
        x, rope, _ = self.eva._pos_embed(x)  # abs pos embed (registers' rows first) + RoPE table, Eva's own code
        wanted, outputs = set(block_indices), []
        for index, block in enumerate(self.eva.blocks[:max(block_indices) + 1]):
            if self.eva.grad_checkpointing and self.training:
                x = checkpoint(block, x, rope=rope, use_reentrant=False)
            else:
                x = block(x, rope=rope)
            if index in wanted:
                outputs.append(self.eva.norm(x)[:, self.num_prefix_tokens:])
        return outputs

    def up_project(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final-normed patch tokens of the last block (B, prod(grid), D) -> (B, 32, *input_shape): DNA
        ``Primus.forward``'s ``up_projection`` of the Eva output (registers removed, tokens back on the grid),
        then ``up_projection_out_norm`` as anatomix's ``PrimusV2.forward`` applies its ``out_norm`` ("demean":
        ``x - x.mean(dim=(2, 3, 4), keepdim=True)``, anatomix's ``ChannelDemean``). Needs ``keep_up_projection``."""
        if self.up_projection is None:
            raise ConfigurationError("This PrimusV2/V3 encoder was built without the up_projection "
                                     "(keep_up_projection=False).")
        dense = self.up_projection(tokens_to_grid([tokens], self.grid))
        if self.up_projection_out_norm == "demean":
            dense = dense - dense.mean(dim=(2, 3, 4), keepdim=True)
        return dense


class PrimusV2SegmentationNetwork(nn.Module):
    """PrimusV2 / V3 encoder (``self.encoder``) + multi-scale ``PrimusStyleDecoder`` (``self.decoder``).

    Built from plain kwargs (plans arch_kwargs). Input (B, input_channels, *input_shape) -> logits
    (B, num_classes, *input_shape). ``input_shape``: 3 axes, each divisible by 8 and at least 16
    (PatchSizeError otherwise). ``input_norm``: "nnunet" (nnU-Net's normalised intensities as they are, what
    nnU-Net's own Primus trainers train on) or "window01" (the planned ``input_window`` -> [0, 1], background 0
    for ``zero_is_background`` channels: anatomix's per-volume [0, 1] scaling, see IntensityWindow). No deep
    supervision (one full-resolution output), as nnU-Net's Primus trainers.

    ``keep_up_projection`` (default False: the network, its state dict and the presets' plans as without it):
    keep the pretrained output head of anatomix-dev-vit. The encoder then also holds ``up_projection``, DNA's own
    ``PatchDecode((8, 8, 8), embed_dim, 32, norm=LayerNormNd, activation=nn.GELU)`` as DNA ``Primus.__init__``
    builds it (dynamic_network_architectures/architectures/primus.py; published keys
    ``up_projection.decode.0.0.weight`` [396, 216, 2, 2, 2], ``decode.0.1`` LayerNormNd(216), ``decode.1.0``
    [216, 120, 2, 2, 2], ``decode.1.1`` LayerNormNd(120), ``decode.2.weight`` [120, 32, 2, 2, 2]), which
    ``load_pretrained(network.encoder, ...)`` loads strictly with the rest (filter nnfm/weights/filters_primus_v2.py;
    without the flag the checkpoint's head is dropped with its reason). Applied as DNA ``Primus.forward`` does: to
    the final-normed Eva output of the last block, registers removed, on the token grid. ``up_projection_out_norm``
    ("demean", default, or "none"): anatomix's ``out_norm`` after it (anatomix-dev-vit: "demean", every channel
    minus its spatial mean over the input; neel-dey/anatomix anatomix/model/vit3d/architectures.py
    ``ChannelDemean``, anatomix/model/load_from_hf.py ``ANATOMIX_VARIANTS``); "none" gives DNA ``PrimusV2``'s own
    output. With the flag:

    * ``dense_features(x)``: (B, input_channels, *input_shape) -> (B, 32, *input_shape), the up-projected features
      at input resolution: with "demean" the output of the authors' model (``load_from_hf("anatomix-dev-vit")``),
      which anatomix registers with (anatomix/registration/registration_infrastructure/features.py: that
      model in sliding windows, then per-voxel normalisation); ``nnFM_extract_features`` writes them
      (``dense_feature_channels`` 32). Without the flag ``dense_features`` raises ConfigurationError.
    * the segmentation head reads them as well: its 1x1x1 classifier (``decoder.seg_layers.0``) takes the token
      decoder's last stage concatenated with the 32 channels (anatomix fine-tunes anatomix-dev-vit with a 1x1x1
      convolution on them: anatomix/segmentation/segmentation_utils.py ``load_model``), so the head is trained
      with the encoder (encoder learning rate, layer id ``depth + 1`` like the final norm) and every parameter
      gets a gradient (nnU-Net's DDP). The decoder's upsampling stages (``decoder.decode``) are the same with or
      without the flag.
    """
    # what nnFM_extract_features builds it with: the pretrained 32-channel head is the features (anatomix-dev-vit)
    DENSE_FEATURE_KWARGS = {"keep_up_projection": True}
    INPUT_NORMS = INPUT_NORMS  # what the input stage can apply (nnfm/conventions.py)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 input_shape: Sequence[int] = (64, 64, 64), tokenizer: str = "v2", embed_dim: int = 396,
                 depth: int = 12, num_heads: int = 6, num_register_tokens: int = 0, qk_norm: bool = False,
                 tokenizer_norm_eps: float = 1e-5, tokenizer_channels: Optional[Sequence[int]] = None,
                 num_aggregated_blocks: int = 4, drop_path_rate: float = 0.0, init_values: Optional[float] = 0.1,
                 scale_attn_inner: bool = True, register_init_std: float = 1e-6, input_norm: str = "nnunet",
                 input_window: Optional[Sequence[Sequence[float]]] = None,
                 zero_is_background: Optional[Sequence[bool]] = None, grad_checkpointing: bool = False,
                 keep_up_projection: bool = False, up_projection_out_norm: str = "demean",
                 **unused_nnunet_kwargs):
        super().__init__()
        if deep_supervision:
            raise ConfigurationError("The PrimusV2/V3 network has no deep supervision outputs; its nnFM trainers "
                                     "switch it off. Pass deep_supervision=False.")
        if input_norm not in INPUT_NORMS:
            raise ConfigurationError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}.")
        input_shape = [int(s) for s in input_shape]
        if len(input_shape) != 3:
            raise PatchSizeError(f"PrimusV2/V3 is a 3D network; got a {len(input_shape)}D patch {input_shape}. "
                                 f"Use the 3d_fullres configuration of its nnFM plans.")
        check_divisible(input_shape, TOKEN_STRIDE, MIN_AXIS)
        self.input_shape = input_shape
        self.input_norm = input_norm
        # anatomix's inputs: each volume scaled to [0, 1] (nnfm/conventions.py WINDOW01)
        self.input_window = IntensityWindow(input_channels, input_window, zero_is_background=zero_is_background) \
            if input_norm == "window01" else None
        # evenly spaced, always ending with the last block (whose tokens the up_projection reads)
        self.block_indices = evenly_spaced_blocks(depth, num_aggregated_blocks)
        self.encoder = PrimusV2Encoder(input_channels, input_shape, tokenizer, embed_dim, depth, num_heads,
                                       num_register_tokens, qk_norm, tokenizer_norm_eps, tokenizer_channels,
                                       drop_path_rate, init_values, scale_attn_inner, register_init_std,
                                       keep_up_projection, up_projection_out_norm)
        self.encoder.eva.set_grad_checkpointing(grad_checkpointing)
        self.decoder = PrimusStyleDecoder(embed_dim * num_aggregated_blocks, num_classes, TOKEN_STRIDE, ndim=3)
        if keep_up_projection:  # the classifier also reads the 32 up-projected channels
            self.decoder.seg_layers[0] = nn.Conv3d(self.decoder.out_channels_before_classifier
                                                   + UP_PROJECTION_CHANNELS, num_classes, kernel_size=1)
        self.decoder.deep_supervision = False  # the attribute nnU-Net's trainer toggles

    @property
    def num_tokens(self) -> int:
        return math.prod(self.encoder.grid)

    @property
    def num_layers(self) -> int:
        return len(self.encoder.eva.blocks)

    @property
    def dense_feature_channels(self) -> int:
        return UP_PROJECTION_CHANNELS

    def encoder_layer_id(self, name: str) -> int:
        """Layer id for layer-wise lr decay of an encoder parameter name (relative to ``self.encoder``):
        tokenizer, register tokens and position embedding 0, ``eva.blocks.i`` i + 1, the final norm and the
        ``up_projection`` depth + 1."""
        if name.startswith(("down_projection.", "eva.pos_embed", "register_tokens")):
            return 0
        if name.startswith("eva.blocks."):
            return int(name.split(".")[2]) + 1
        return self.num_layers + 1

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if list(x.shape[2:]) != self.input_shape:
            raise PatchSizeError(
                f"This PrimusV2/V3 network was built for patches of {self.input_shape} (its position embedding and "
                f"rotary tables are fixed to a {self.encoder.grid} token grid) but got {list(x.shape[2:])}. "
                f"Predict with the plans the model was trained with, or build it with input_shape="
                f"{list(x.shape[2:])} (axes divisible by 8).")
        return self.input_window(x) if self.input_window is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(self._input(x), self.block_indices)
        grid = tokens_to_grid(tokens, self.encoder.grid)
        if self.encoder.up_projection is None:
            return self.decoder(grid)
        dense = self.encoder.up_project(tokens[-1])  # block_indices end with the last block
        return self.decoder.seg_layers[0](torch.cat((self.decoder.decode(grid), dense), dim=1))

    @torch.no_grad()
    def dense_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *input_shape) -> (B, 32, *input_shape): the pretrained up-projection's features (anatomix-dev-vit's
        own output with ``up_projection_out_norm="demean"``), for nnFM_extract_features. Needs
        ``keep_up_projection=True``."""
        if self.encoder.up_projection is None:
            raise ConfigurationError(
                "This PrimusV2/V3 network was built without the pretrained up_projection (keep_up_projection=False, "
                "the presets' default), so it has no dense features. Build it with keep_up_projection=True and load "
                "anatomix-dev-vit weights into its encoder (nnFM_extract_features: -p plans whose arch_kwargs have "
                "\"keep_up_projection\": true).")
        last = self.encoder(self._input(x), [self.num_layers - 1])[0]
        return self.encoder.up_project(last)

    def initialize(self, module: nn.Module) -> None:
        """Called by get_network_from_plans: He init (a=1e-2, zero bias) for the convs, as DNA's Primus applies
        ``InitWeights_He(1e-2)`` to its tokenizer; Eva's linears, norms, tokens and the V3 skip scales keep
        their own init."""
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# ---- registry entries (nnfm/registry.py) ------------------------------------------------------------------
from nnfm.encoder_entry import EncoderEntry, register_encoder  # noqa: E402  (registered beside the network)

# nnU-Net's Primus recipe (PRIMUS_RECIPE, with its source); a pretrained PrimusV2 encoder at nnssl's Primus 1e-4
_NNUNET_RECIPE = PRIMUS_RECIPE.with_changes({"encoder_lr": {"primus_v2": 1e-4}})
# neel-dey/anatomix anatomix/segmentation/train_segmentation.py (load_model(hf_variant="anatomix-dev-vit")):
# torch.optim.Adam(all parameters, 2e-4, weight_decay=0), CosineAnnealingLR over the epochs, no clipping
_ANATOMIX_VIT_RECIPE = Recipe("Adam", 2e-4, 0.0, "cosine", "neel-dey/anatomix anatomix/segmentation/"
                              "train_segmentation.py --hf_variant anatomix-dev-vit", betas=(0.9, 0.999),
                              deep_supervision=False)
_COMMON = dict(network_class=f"{PrimusV2SegmentationNetwork.__module__}.{PrimusV2SegmentationNetwork.__qualname__}",
               configuration="3d_fullres", planner="nnfm_planners.nnfm_primus_v2_planner.nnFMPrimusV2Planner",
               families=("primus_v2",), token_stride=TOKEN_STRIDE, min_axis=MIN_AXIS)
_TRAINER_NAMES = {"primus_v2": "PrimusV2", "primus_v3": "PrimusV3"}

for _name, _kwargs in PRIMUS_V2_PRESETS.items():
    if not _name.startswith("primus_"):
        continue
    _version, _size = _name[len("primus_"):].split("_")
    _recommended = " nnU-Net's recommended Primus (documentation/primus.md)." if _name == "primus_v3_s" else ""
    register_encoder(EncoderEntry(
        name=_name, network_kwargs=_kwargs, trainer=f"nnFMTrainer_{_TRAINER_NAMES['primus_' + _version]}"
                                                    f"{_size.upper()}", weights=None,
        input_convention=NNUNET, recipe=_NNUNET_RECIPE,
        description=f"Primus{_version.upper()}-{_size.upper()} (dynamic-network-architectures 0.4.4, "
                    f"{'iterative residual' if _version == 'v2' else 'channel-heavy residual, skip-projected'} "
                    f"tokenizer) with multi-scale token aggregation; no published weights.{_recommended}",
        license="no weights (architecture: dynamic-network-architectures, Apache-2.0)",
        status=f"random init (no official weights); tokens equal DNA's Primus{_version.upper()}'s (tiny test); "
               f"not trained at full size here",
        **_COMMON))

register_encoder(EncoderEntry(
    name="anatomix_dev_vit", network_kwargs=PRIMUS_V2_PRESETS["anatomix_dev_vit"], trainer="nnFMTrainer_AnatomixDevViT",
    scratch_trainer="nnFMTrainer_AnatomixDevViT_scratch", weights="anatomix-dev-vit",
    input_convention=WINDOW01, recipe=_ANATOMIX_VIT_RECIPE,
    description="anatomix-dev-vit: PrimusV2-S with 8 register tokens and QK-norm, contrastively pretrained on "
                "anatomix's synthetic volumes (128^3)",
    license="MIT (anatomix repository)",
    status="loader tested on the published layout; trains + predicts at tiny size on CPU (tests)", **_COMMON))

register_encoder(EncoderEntry(
    name="anatomix_dev_vit_tiny", network_kwargs=PRIMUS_V2_PRESETS["anatomix_dev_vit_tiny"],
    trainer="nnFMTrainer_AnatomixDevViTTiny", scratch_trainer="nnFMTrainer_AnatomixDevViTTiny_scratch", weights=None,
    input_convention=WINDOW01, recipe=_ANATOMIX_VIT_RECIPE,
    description="anatomix-dev-vit's architecture at test size (embed 48, depth 4, 2 registers): CPU runs and tests",
    license="-", status="trains + predicts (tests)", tiny=True, **_COMMON))
del _name, _kwargs, _version, _size, _recommended
