"""A pretrained anatomix U-Net turned into an nnU-Net segmentation network.

Built from plain kwargs (like dynamic-network-architectures) so that nnU-Net's
``get_network_from_plans`` and ``nnFMTrainer.build_network_architecture`` can both create it.
"""
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from nnfm.conventions import WINDOW01, ZSCORE
from nnfm.errors import ConfigurationError
from nnfm.networks.anatomix_unet import AnatomixUNet
from nnfm.networks.intensity_window import IntensityWindow
from nnfm.networks.seg_layers import rename_old_keys
from nnfm.networks.stride_padding import check_divisible, crop_to, pad_to_multiple


class DeepSupervisionHeads(nn.Module):
    """1x1x1 segmentation heads on the dense output and on the decoder levels.

    The attribute name ``decoder.deep_supervision`` is what nnU-Net's trainer toggles; the heads are
    ``seg_layers`` so that nnU-Net's ``-pretrained_weights`` re-initialises them (old name: ``heads``).
    """

    def __init__(self, dense_channels: int, level_channels: Sequence[int], num_classes: int,
                 deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        # seg_layers[0] works on the full-resolution features, seg_layers[i] on 1/2**i resolution
        self.seg_layers = nn.ModuleList([nn.Conv3d(c, num_classes, 1) for c in (dense_channels, *level_channels)])

    def forward(self, dense: torch.Tensor, levels_fine_to_coarse: List[torch.Tensor]):
        full = self.seg_layers[0](dense)
        if not self.deep_supervision:
            return full
        return [full] + [head(f) for head, f in zip(self.seg_layers[1:], levels_fine_to_coarse)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rename_old_keys(state_dict, prefix, {"heads.": "seg_layers."})  # checkpoints before issue 13
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class AnatomixSegmentationNetwork(nn.Module):
    """anatomix U-Net (exact published layout, ``self.encoder``) + segmentation heads (``self.decoder``).

    Deep supervision outputs: full, 1/2, ... 1/2**(num_downs-1) resolution (``deep_supervision_scales``).
    Inputs whose size is not divisible by ``2 ** num_downs`` are padded and the outputs cropped back, so the
    network also runs on patch sizes planned for nnU-Net's own U-Net.
    ``num_downs``, ``ngf``, ``encoder_out_channels``, ``norm``, ``norm_eps``, ``pooling``, ``interp`` are the
    encoder's preset (``AnatomixUNet``; the registry entries ``anatomix`` and ``anatomix_dev_unet``).
    ``input_norm`` (nnfm/conventions.py): "window01" clips nnU-Net's intensities to ``input_window`` and scales
    them to [0, 1] (anatomix's own input); "zscore" feeds nnU-Net's per-image z-scores as they are (what nnFM's
    MAE pretraining saw). The planner sets it from the weights' recorded convention.
    """
    INPUT_NORMS = (WINDOW01.name, ZSCORE.name)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = True,
                 num_downs: int = 4, ngf: int = 16, encoder_out_channels: int = 16, norm: str = "batch",
                 norm_eps: float = 1e-5, pooling: str = "Max", interp: str = "nearest",
                 input_window: Optional[Sequence[Sequence[float]]] = None,
                 pad_to_stride: bool = True, strides: Optional[Sequence[Sequence[int]]] = None,
                 zero_is_background: Optional[Sequence[bool]] = None, input_norm: str = WINDOW01.name,
                 **unused_nnunet_kwargs):
        super().__init__()
        if input_norm not in self.INPUT_NORMS:
            raise ConfigurationError(f"input_norm must be one of {self.INPUT_NORMS} (nnfm/conventions.py), got "
                                     f"{input_norm!r}; re-run nnFM_plan_and_preprocess -d ID -e ENCODER.")
        self.input_norm = input_norm
        self.num_downs = num_downs
        self.stride = 2 ** num_downs
        # reflect padding needs >= 2 voxels per axis at the bottleneck
        self.min_size = 2 * self.stride
        self.pad_to_stride = pad_to_stride
        if strides is not None:
            expected = [[1, 1, 1]] + [[2, 2, 2]] * num_downs
            if [list(s) for s in strides] != expected:
                raise ConfigurationError(
                    f"The anatomix U-Net pools 2x2x2 {num_downs} times; the plans say strides={strides}. "
                    f"Re-plan with nnFM_plan_and_preprocess -d ID -e ENCODER or remove 'strides' from arch_kwargs.")
        # anatomix's input: each volume min-max scaled to [0, 1], background 0 (see IntensityWindow); z-scores as
        # they are for weights pretrained on them (padding with 0 is then the mean, as in that pretraining)
        self.input_window = IntensityWindow(input_channels, input_window, zero_is_background=zero_is_background) \
            if input_norm == WINDOW01.name else nn.Identity()
        self.encoder = AnatomixUNet(input_channels, encoder_out_channels, num_downs, ngf, norm, norm_eps=norm_eps,
                                    pooling=pooling, interp=interp)
        # deep supervision taps the finest num_downs-1 decoder levels below full resolution
        level_channels = list(reversed(self.encoder.decoder_channels[:-1]))
        self.decoder = DeepSupervisionHeads(encoder_out_channels, level_channels, num_classes, deep_supervision)

    @property
    def deep_supervision_scales(self) -> List[List[float]]:
        return [[1 / 2 ** i] * 3 for i in range(self.num_downs)]

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        spatial = x.shape[2:]
        x = self.input_window(x)
        if self.pad_to_stride:
            # padding after the window: zeros are the darkest intensity (window01) or the mean (zscore)
            x = pad_to_multiple(x, self.stride, minimum=self.min_size)
        else:
            check_divisible(spatial, self.stride, self.min_size)
        dense, levels = self.encoder.forward_with_levels(x)
        # levels are coarsest first and end with the full-resolution level
        out = self.decoder(dense, list(reversed(levels[:-1])))
        if not isinstance(out, list):
            return crop_to(out, spatial, 1.0)
        return [crop_to(o, spatial, scale[0]) for o, scale in zip(out, self.deep_supervision_scales)]

    @property
    def dense_feature_channels(self) -> int:
        return self.encoder.out_channels

    @torch.no_grad()
    def dense_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) nnU-Net-normalised -> (B, encoder_out_channels, D, H, W): the anatomix U-Net's own dense
        output, the features anatomix uses for registration and kNN segmentation (nnFM_extract_features)."""
        spatial = x.shape[2:]
        x = self.input_window(x)
        if self.pad_to_stride:
            x = pad_to_multiple(x, self.stride, minimum=self.min_size)
        else:
            check_divisible(spatial, self.stride, self.min_size)
        return crop_to(self.encoder(x), spatial, 1.0)

    def initialize(self, module: nn.Module) -> None:
        """Kaiming init for convs, as nnU-Net's InitWeights_He; called by get_network_from_plans."""
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# ---- registry entry (nnfm/registry.py) -------------------------------------------------------------------
from nnfm.conventions import Recipe  # noqa: E402
from nnfm.encoder_entry import EncoderEntry, register_encoder  # noqa: E402  (registered beside the network)

# neel-dey/anatomix anatomix/segmentation/train_segmentation.py: torch.optim.Adam(..., opt.lr (2e-4), weight_decay=0),
# CosineAnnealingLR(T_max=n_epochs) stepped per epoch; chosen over nnU-Net's SGD by measurement (benchmarks.md)
ANATOMIX_RECIPE = Recipe("Adam", 2e-4, 0.0, "cosine", "neel-dey/anatomix anatomix/segmentation/train_segmentation.py")

register_encoder(EncoderEntry(
    name="anatomix",
    network_class=f"{AnatomixSegmentationNetwork.__module__}.{AnatomixSegmentationNetwork.__qualname__}",
    # neel-dey/anatomix anatomix/model/network.py: Unet(dimension=3, input_nc=1, output_nc=16, num_downs=4, ngf=16)
    network_kwargs={"num_downs": 4, "ngf": 16, "encoder_out_channels": 16, "norm": "batch"},
    configuration="3d_fullres", planner="nnfm_planners.nnfm_planner.nnFMPlanner", trainer="nnFMTrainer",
    # default: nnFM's embedded synthetic-data weights (anatomix's recipe): ahead of random init in 26 of 27 draws
    # (1, 3, 10 labelled cases, 50-400 iterations), ahead of the Hippocampus MAE weights at 1 case and short
    # budgets, and no real data seen, so they suit any dataset (issue 12, documentation/benchmarks.md).
    # -w anatomix_mae_hippocampus: the MAE weights (offline); -w anatomix: the authors' published weights (a download)
    scratch_trainer="nnFMTrainer_scratch", families=("anatomix_unet",), weights="anatomix_synth_nnfm",
    input_convention=WINDOW01, recipe=ANATOMIX_RECIPE,
    token_stride=16, min_axis=32,
    # forward + backward 9 % faster in channels_last_3d on the 2-core CPU (0.226 vs 0.250 s, batch 2, 32x48x32;
    # documentation/benchmarks.md, issue 29)
    cpu_channels_last=True,
    description="anatomix 3D U-Net (Dey et al., ICLR 2025), pretrained on synthetic volumes only",
    license="MIT", status="trains + predicts; loader tested on the published layout"))
