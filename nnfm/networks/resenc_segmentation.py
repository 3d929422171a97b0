"""nnssl / OpenMind ResEnc-L: nnU-Net's own ``ResidualEncoderUNet``, built from plain kwargs.

The class IS dynamic_network_architectures' ``ResidualEncoderUNet`` (a subclass that only turns the plans'
plain JSON into its constructor arguments), so its state dict is exactly the one nnssl pretrains and nnU-Net
master fine-tunes (``encoder.stem.*``, ``encoder.stages.*``, ``decoder.*`` with ``decoder.seg_layers.*``):
an nnssl checkpoint's encoder loads key for key, and a checkpoint of this network is an nnU-Net ResEnc
checkpoint. ``network.encoder`` is the part pretrained weights go into (stem + stages); the decoder is
nnU-Net's ``UNetDecoder`` (transposed convolutions, one conv block per stage, deep-supervision heads).

Topology (preset ``RESENC_L_TOPOLOGY``): nnU-Net master's "ResEncL" (MIC-DKFZ/nnUNet
nnunetv2/utilities/get_network_via_name.py): 6 stages, features 32-64-128-256-320-320, 3x3x3 kernels,
isotropic stride 2 after the first stage, [1, 3, 4, 6, 6, 6] residual blocks, conv bias, instance norm
(eps 1e-5, affine), LeakyReLU, one decoder conv per stage. Every patch axis must be a multiple of the total
stride (32) and at least twice it (instance norm needs more than one voxel at the bottleneck).
"""
import math
from typing import List, Sequence

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from nnfm.conventions import ZSCORE
from nnfm.errors import ConfigurationError, PatchSizeError
from nnfm.networks.stride_padding import check_divisible
from nnfm.weights.nnssl_adaptation import RESENC_L_TOPOLOGY

def total_stride(strides: Sequence[Sequence[int]]) -> List[int]:
    """Per-axis product of the stage strides (the factor every patch axis must be a multiple of)."""
    return [int(math.prod(axis)) for axis in zip(*strides)]


class ResEncSegmentationNetwork(ResidualEncoderUNet):
    """nnU-Net's 3D ResidualEncoderUNet from plain kwargs: ``(input_channels, num_classes, deep_supervision,
    **topology)``.

    Input (B, C, X, Y, Z) with every axis a multiple of ``stride`` and >= ``min_size``; output (B, classes,
    X, Y, Z), or with deep supervision a list at 1, 1/2, ... (``deep_supervision_scales``).
    Raises ConfigurationError for a topology that is not a 3D ResEnc U-Net and PatchSizeError for bad inputs.
    """
    # the one input convention its planner and input stage give the encoder (nnfm/conventions.py)
    input_norm = ZSCORE.name
    INPUT_NORMS = (ZSCORE.name,)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 n_stages: int = 6, features_per_stage: Sequence[int] = RESENC_L_TOPOLOGY["features_per_stage"],
                 kernel_sizes: Sequence[Sequence[int]] = RESENC_L_TOPOLOGY["kernel_sizes"],
                 strides: Sequence[Sequence[int]] = RESENC_L_TOPOLOGY["strides"],
                 n_blocks_per_stage: Sequence[int] = RESENC_L_TOPOLOGY["n_blocks_per_stage"],
                 n_conv_per_stage_decoder: Sequence[int] = RESENC_L_TOPOLOGY["n_conv_per_stage_decoder"],
                 conv_bias: bool = True, norm_eps: float = 1e-5, **unused_nnunet_kwargs):
        lists = {"features_per_stage": features_per_stage, "kernel_sizes": kernel_sizes, "strides": strides,
                 "n_blocks_per_stage": n_blocks_per_stage}
        wrong = [f"{k} has {len(v)}" for k, v in lists.items() if len(v) != n_stages]
        if len(n_conv_per_stage_decoder) != n_stages - 1:
            wrong.append(f"n_conv_per_stage_decoder has {len(n_conv_per_stage_decoder)} (needs n_stages - 1)")
        if wrong or any(len(k) != 3 for k in kernel_sizes) or any(len(s) != 3 for s in strides):
            raise ConfigurationError(
                f"ResEncSegmentationNetwork is a 3D U-Net with {n_stages} stages: {'; '.join(wrong) or 'kernels and strides need 3 axes'}. "
                f"Re-plan with nnFM_plan_and_preprocess -e resenc_l.")
        super().__init__(input_channels, n_stages, list(features_per_stage), nn.Conv3d,
                         [list(k) for k in kernel_sizes], [list(s) for s in strides], list(n_blocks_per_stage),
                         num_classes, list(n_conv_per_stage_decoder), conv_bias, nn.InstanceNorm3d,
                         {"eps": norm_eps, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision)
        self.strides_per_stage = [list(s) for s in strides]
        self.stride_per_axis = total_stride(strides)
        # nnFMTrainer checks the planned patch against these (pad_to_stride False: no silent padding)
        self.stride = max(self.stride_per_axis)
        self.min_size = 2 * self.stride
        self.pad_to_stride = False
        self.ndim = 3

    @property
    def deep_supervision_scales(self) -> List[List[float]]:
        """nnU-Net's scales: 1 at full resolution, then the inverse cumulative strides of the decoder levels."""
        scales, factor = [], [1.0, 1.0, 1.0]
        for stride in self.strides_per_stage[:-1]:
            factor = [f / s for f, s in zip(factor, stride)]
            scales.append(list(factor))
        return scales

    def check_patch(self, spatial: Sequence[int]) -> None:
        """PatchSizeError unless every axis is a multiple of its stride and at least twice it."""
        if len(set(self.stride_per_axis)) == 1:
            check_divisible(spatial, self.stride, self.min_size)
            return
        bad = [(s, m) for s, m in zip(spatial, self.stride_per_axis) if s % m or s < 2 * m]
        if bad:
            raise PatchSizeError(f"Patch {list(spatial)} does not fit per-axis strides {self.stride_per_axis}: "
                                 f"every axis must be a multiple of its stride and at least twice it.")

    def forward(self, x: torch.Tensor):
        self.check_patch(x.shape[2:])
        return super().forward(x)


# ---- registry entry (nnfm/registry.py) -------------------------------------------------------------------
from nnfm.conventions import Recipe  # noqa: E402
from nnfm.encoder_entry import EncoderEntry, register_encoder  # noqa: E402  (registered beside the network)

# nnU-Net master's fine-tuning of nnssl checkpoints (MIC-DKFZ/nnUNet nnunetv2/training/nnUNetTrainer/pretraining/
# pretrainedTrainer.py PretrainedTrainer): SGD 1e-3 (1e-2 without pretrained weights), momentum 0.99 Nesterov,
# nnU-Net's weight decay 3e-5, 50 of 1000 epochs linear warm-up then poly, deep supervision off
NNSSL_RECIPE = Recipe("SGD", 1e-3, 3e-5, "poly", "MIC-DKFZ/nnUNet (master) nnunetv2/training/nnUNetTrainer/pretraining/"
                      "pretrainedTrainer.py", scratch_lr=1e-2, momentum=0.99, full_warmup_fraction=0.05,
                      deep_supervision=False)

_RESENC = dict(
    network_class=f"{ResEncSegmentationNetwork.__module__}.{ResEncSegmentationNetwork.__qualname__}",
    configuration="3d_fullres", planner="nnfm_planners.nnfm_resenc_planner.nnFMResEncPlanner",
    families=("nnssl_resenc",),
    input_convention=ZSCORE, recipe=NNSSL_RECIPE)
register_encoder(EncoderEntry(
    name="resenc_l", network_kwargs=RESENC_L_TOPOLOGY, trainer="nnFMTrainer_ResEncL",
    scratch_trainer="nnFMTrainer_ResEncL_scratch", weights="resenc_l_openmind_mae", token_stride=32, min_axis=64,
    description="nnssl / OpenMind ResEnc-L (nnU-Net's ResidualEncoderUNet, MAE on 114k brain MRI)",
    license="CC-BY-4.0 (model card of MIC-DKFZ/ResEncL-OpenMind-MAE)",
    status="loader tested on the published layout; trains at tiny size only on CPU", **_RESENC))
