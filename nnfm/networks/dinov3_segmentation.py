"""DINOv3 / MedDINOv3 ViT (timm) + multi-scale token aggregation + Primus-style decoder, for 2D nnU-Net.

The MedDINOv3 segmentation network (Li et al. 2025, ``Primus_Multiscale``): the final-normed patch
tokens of four evenly spaced blocks (2, 5, 8, 11 of 12) are reshaped to the 16x-downsampled grid,
concatenated (4 * D channels) and decoded by log2(16) = 4 stages of transposed convolution +
LayerNorm + GELU and a 1x1 classifier (``nnfm.networks.token_decoder``). The ViT is timm's own
DINOv3 port (``vit_*_patch16_dinov3[_qkvb]``, RoPE, 4 register/"storage" tokens, LayerScale); the
aggregated tokens are exactly timm's ``forward_intermediates(norm=True)`` of those blocks.

Built from plain kwargs (the plans' ``architecture.arch_kwargs``) with the
``input_channels, num_classes, deep_supervision`` signature, so nnU-Net's ``get_network_from_plans``
and the nnFM trainers both build it. Any number of input channels (the loader adapts the RGB stem,
see ``nnfm.weights.loading.adapt_stem_channels``), any input whose axes are multiples of 16.

Input convention (``input_norm`` in the plans' arch_kwargs, written per preset by the ViT planner; see
``nnfm.conventions`` and documentation/design.md):

* ``"nnunet"`` (MedDINOv3): nnU-Net's normalised intensities as they are, one grey channel seen as RGB. The
  authors fine-tune on nnU-Net's own preprocessing (plain nnUNetPlans, CTNormalization for CT) and their
  ``Primus_Multiscale.forward`` only repeats the channel to three (ricklisz/MedDINOv3,
  nnUNet/nnunetv2/training/nnUNetTrainer/dinov3/dinov3/models/primus.py; README: ``-tr
  meddinov3_base_primus_multiscale_Trainer`` on nnUNetPlans): no window, no ImageNet step. Repeating the
  input to RGB equals summing the stem's RGB kernels, which the loader does (``adapt_stem_channels``).
* ``"imagenet"`` (official DINOv3, natural images): clip each channel to the window the planner measured
  (0.5 / 99.5 percentiles, nnU-Net units), map it to [0, 1] as an image and apply ImageNet's statistics
  averaged over RGB (mean 0.449, std 0.226; timm's IMAGENET_DEFAULT_MEAN / _STD, which DINOv3's
  ``make_classification_eval_transform`` uses).
* ``"none"``: the pre-issue-11 spelling of ``"nnunet"`` (kept so old plans build unchanged).

No deep supervision (MedDINOv3 trains without it): the network returns one tensor and refuses
``deep_supervision=True`` with the fix. On CUDA, whenever autocast is on (nnU-Net's training,
validation and ``nnUNetv2_predict``), the network runs in bfloat16 (``autocast_dtype``), with
timm's fused scaled-dot-product attention (flash / memory-efficient kernels).
"""
import contextlib
from typing import Dict, List, Optional, Sequence

import timm
import torch
from torch import nn

from nnfm.errors import ConfigurationError
from nnfm.conventions import IMAGENET, NNUNET, Recipe
from nnfm.networks.intensity_window import IntensityWindow
from nnfm.networks.stride_padding import check_divisible
from nnfm.networks.token_decoder import PrimusStyleDecoder, evenly_spaced_blocks

PATCH = 16
# grey-level ImageNet statistics (the mean of timm's IMAGENET_DEFAULT_MEAN / _STD over RGB)
IMAGENET_GREY_MEAN = (0.485 + 0.456 + 0.406) / 3
IMAGENET_GREY_STD = (0.229 + 0.224 + 0.225) / 3

# encoder presets: timm model name, weights family, default registry weights, drop-path rate.
# Official DINOv3 files carry a (masked) qkv bias -> timm's ``_qkvb`` variant; MedDINOv3 was
# trained with qkv_bias=False -> the variant without bias.
VIT_PRESETS: Dict[str, dict] = {
    "dinov3_vits16": {"vit": "vit_small_patch16_dinov3_qkvb", "weights": "dinov3_vits16",
                      "drop_path_rate": 0.1, "input_norm": IMAGENET.name},
    "dinov3_vitb16": {"vit": "vit_base_patch16_dinov3_qkvb", "weights": "dinov3_vitb16",
                      "drop_path_rate": 0.2, "input_norm": IMAGENET.name},
    # MedDINOv3 fine-tunes on nnU-Net's normalised intensities (see the module docstring for the source)
    "meddinov3_vitb16": {"vit": "vit_base_patch16_dinov3", "weights": "meddinov3_vitb16",
                         "drop_path_rate": 0.2, "input_norm": NNUNET.name},
}


def keep_rope_periods(vit: nn.Module) -> None:
    """Make a timm DINOv3 ViT's RoPE periods a persistent buffer.

    DINOv3 checkpoints store their RoPE periods (bf16-rounded in MedDINOv3); a persistent buffer loads them
    exactly instead of timm's fp32 recomputation, and saves them in checkpoints.
    """
    rope = getattr(vit, "rope", None)
    if rope is not None and "periods" in getattr(rope, "_non_persistent_buffers_set", set()):
        rope._non_persistent_buffers_set.discard("periods")


class DINOv3SegmentationNetwork(nn.Module):
    """timm DINOv3 ViT (``self.encoder``) + multi-scale tokens + PrimusStyleDecoder (``self.decoder``)."""
    INPUT_NORMS = (IMAGENET.name, NNUNET.name)  # what the input stage can apply (nnfm/conventions.py)

    ndim = 2
    stride = PATCH
    min_size = PATCH
    pad_to_stride = False

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 vit: str = "vit_base_patch16_dinov3", vit_kwargs: Optional[dict] = None,
                 aggregation_blocks: Optional[Sequence[int]] = None, drop_path_rate: float = 0.0,
                 input_window: Optional[Sequence[Sequence[float]]] = None, input_norm: str = "imagenet",
                 autocast_dtype: Optional[str] = "bfloat16", **unused_nnunet_kwargs):
        super().__init__()
        if deep_supervision:
            raise ConfigurationError(
                "DINOv3SegmentationNetwork has no deep supervision (MedDINOv3 trains without it). Train it with "
                "an nnFM ViT trainer (nnFMTrainer_MedDINOv3, nnFMTrainer_DINOv3_S, ...: enable_deep_supervision=False), "
                "not nnUNetTrainer.")
        if input_norm not in ("imagenet", "nnunet", "none"):
            raise ConfigurationError(f"input_norm must be 'imagenet' (official DINOv3) or 'nnunet' (MedDINOv3), "
                                     f"got {input_norm!r}")
        self.input_norm = "nnunet" if input_norm == "none" else input_norm
        self.input_window = IntensityWindow(input_channels, input_window, ndim=2) if input_norm == "imagenet" \
            else nn.Identity()
        kwargs = dict(vit_kwargs or {})
        self.encoder = timm.create_model(vit, pretrained=False, num_classes=0, in_chans=input_channels,
                                         drop_path_rate=drop_path_rate, **kwargs)
        if tuple(self.encoder.patch_embed.patch_size) != (PATCH, PATCH):
            raise ConfigurationError(f"{vit} has patch size {self.encoder.patch_embed.patch_size}; nnFM's 2D ViT "
                                     f"path needs 16x16 patches.")
        for block in self.encoder.blocks:
            # torch's scaled_dot_product_attention: flash / memory-efficient kernels on GPU (timm's default
            # unless TIMM_FUSED_ATTN=0; set here so an environment variable cannot silently change memory)
            block.attn.fused_attn = True
        keep_rope_periods(self.encoder)
        depth = len(self.encoder.blocks)
        self.aggregation_blocks = list(aggregation_blocks) if aggregation_blocks is not None \
            else evenly_spaced_blocks(depth, min(4, depth))
        if not self.aggregation_blocks or any(not 0 <= b < depth for b in self.aggregation_blocks):
            raise ConfigurationError(f"aggregation_blocks {self.aggregation_blocks} must lie in 0..{depth - 1}")
        self.embed_dim = self.encoder.embed_dim
        self.decoder = PrimusStyleDecoder(len(self.aggregation_blocks) * self.embed_dim, num_classes, PATCH, ndim=2)
        self.decoder.deep_supervision = False  # nnU-Net's trainer sets this attribute; the decoder ignores it
        self.autocast_dtype = getattr(torch, autocast_dtype) if autocast_dtype else None
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_GREY_MEAN), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_GREY_STD), persistent=False)

    # ---- pieces ---------------------------------------------------------------------------
    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) nnU-Net-normalised intensities -> the ViT's input convention (same shape)."""
        if self.input_norm == "nnunet":
            return x
        return (self.input_window(x) - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)

    def aggregated_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) prepared input -> (B, len(blocks) * D, H / 16, W / 16): final-normed patch tokens."""
        maps: List[torch.Tensor] = self.encoder.forward_intermediates(
            x, indices=self.aggregation_blocks, norm=True, output_fmt="NCHW", intermediates_only=True,
            stop_early=True)
        return torch.cat(maps, dim=1)

    def _precision(self, x: torch.Tensor):
        if self.autocast_dtype is not None and x.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
            return torch.autocast("cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x.shape[2:], PATCH, self.min_size)
        with self._precision(x):
            return self.decoder(self.aggregated_tokens(self.prepare_input(x)))

    # ---- nnU-Net hooks -----------------------------------------------------------------------
    def initialize(self, module: nn.Module) -> None:
        """nnU-Net's InitWeights_He for the decoder's convolutions (timm initialises the ViT itself)."""
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module is not self.encoder.patch_embed.proj:
            nn.init.kaiming_normal_(module.weight, a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @property
    def num_layers(self) -> int:
        return len(self.encoder.blocks)

    def encoder_layer_id(self, name: str) -> int:
        """Depth of an encoder parameter for layer-wise lr decay: embeddings 0, block i -> i + 1, norm -> depth + 1."""
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith(("cls_token", "reg_token", "pos_embed", "patch_embed", "rope")):
            return 0
        return self.num_layers + 1


# ---- registry entries (nnfm/registry.py) ------------------------------------------------------------------
from nnfm.encoder_entry import EncoderEntry, register_encoder  # noqa: E402  (registered beside the network)

_VIT_FAMILIES = ("meddinov3_vit", "dinov3_vit", "meddinov3_primus_nnunet", "nnfm_vit")
_NETWORK = f"{DINOv3SegmentationNetwork.__module__}.{DINOv3SegmentationNetwork.__qualname__}"
_VIT_ENTRY = dict(network_class=_NETWORK, configuration="2d", planner="nnfm_planners.nnfm_vit_planner.nnFMViTPlanner",
                  families=_VIT_FAMILIES, token_stride=PATCH, min_axis=PATCH)
# AdamW (0.9, 0.98), decoder 3e-4, wd 0.05, 5% linear warm-up then poly, clip 1 (ricklisz/MedDINOv3 nnUNet
# meddinov3_base_primus_multiscale_Trainer, nnU-Net's Primus recipe; documentation/design.md); the pretrained encoder
# by weights family: official DINOv3 1e-4, MedDINOv3 (and an nnFM ViT trained before) 3e-5, gently
VIT_RECIPE = Recipe("AdamW", 3e-4, 0.05, "poly", "ricklisz/MedDINOv3 nnUNet/nnunetv2/training/nnUNetTrainer/dinov3 "
                    "trainers", encoder_lr={"dinov3_vit": 1e-4, "meddinov3_vit": 3e-5, "meddinov3_primus_nnunet": 3e-5,
                                            "nnfm_vit": 3e-5}, betas=(0.9, 0.98), grad_clip=1.0,
                    full_warmup_fraction=0.05, deep_supervision=False)
_DINOV3_LICENSE = "DINOv3 License (Meta)"

for _name, _trainer in (("dinov3_vits16", "nnFMTrainer_DINOv3_S"), ("dinov3_vitb16", "nnFMTrainer_DINOv3_B"),
                        ("meddinov3_vitb16", "nnFMTrainer_MedDINOv3")):
    _preset = VIT_PRESETS[_name]
    register_encoder(EncoderEntry(
        name=_name, network_kwargs={k: _preset[k] for k in ("vit", "drop_path_rate", "input_norm")},
        trainer=_trainer, scratch_trainer=f"{_trainer}_scratch", weights=_preset["weights"],
        input_convention={c.name: c for c in (IMAGENET, NNUNET)}[_preset["input_norm"]], recipe=VIT_RECIPE,
        description=("MedDINOv3 ViT-B/16 (CT-3M)" if _name.startswith("med") else
                     f"official DINOv3 ViT-{'S' if 'vits' in _name else 'B'}/16 (LVD-1689M)"),
        license=("derived from DINOv3: DINOv3 License" if _name.startswith("med") else _DINOV3_LICENSE),
        status="trains + predicts (tiny test model); loader tested on the published layout", **_VIT_ENTRY))
del _name, _trainer, _preset
