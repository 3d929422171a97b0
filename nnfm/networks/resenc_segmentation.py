"""nnssl / OpenMind ResEnc-L: nnU-Net's own ``ResidualEncoderUNet``, built from plain kwargs.

The class IS dynamic_network_architectures' ``ResidualEncoderUNet`` (a subclass that only turns the plans'
plain JSON into its constructor arguments), so its state dict is exactly the one nnssl pretrains and nnU-Net
master fine-tunes (``encoder.stem.*``, ``encoder.stages.*``, ``decoder.*`` with ``decoder.seg_layers.*``):
an nnssl checkpoint's encoder loads key for key, and a checkpoint of this network is an nnU-Net ResEnc
checkpoint. ``network.encoder`` is the part pretrained weights go into (stem + stages); the decoder is
nnU-Net's ``UNetDecoder`` (transposed convolutions, one conv block per stage, deep-supervision heads).

Two registry entries build it: ``resenc_l`` (nnssl's ResEnc-L weights into ``network.encoder``, planner
planners/nnfm_resenc_planner.py) and ``resenc_unet`` (``ResEncUNetSegmentationNetwork``: nnU-Net's ResEnc pattern cut
at 5 stages, ``RESENC_UNET_TOPOLOGY``, for nnFM's own pretraining, whose files load into all but the seg layers;
planned by planners/nnfm_dna_planner.py like ``plainconv_unet``, nnfm/networks/plainconv_segmentation.py).

Topology (preset ``RESENC_L_TOPOLOGY``): nnU-Net master's "ResEncL" (MIC-DKFZ/nnUNet
nnunetv2/utilities/get_network_via_name.py): 6 stages, features 32-64-128-256-320-320, 3x3x3 kernels,
isotropic stride 2 after the first stage, [1, 3, 4, 6, 6, 6] residual blocks, conv bias, instance norm
(eps 1e-5, affine), LeakyReLU, one decoder conv per stage. Every patch axis must be a multiple of the total
stride (32) and at least twice it (instance norm needs more than one voxel at the bottleneck).
"""
from typing import Sequence

from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from nnfm.conventions import ZSCORE
from nnfm.networks.dna_unet import FixedTopologyUNet, NetworkWithoutSegLayers, check_topology, patch_rules
from nnfm.weights.nnssl_adaptation import RESENC_L_TOPOLOGY


class ResEncSegmentationNetwork(FixedTopologyUNet, ResidualEncoderUNet):
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
        check_topology("ResEncSegmentationNetwork", "resenc_l (or resenc_unet)", n_stages,
                       {"features_per_stage": features_per_stage, "kernel_sizes": kernel_sizes, "strides": strides,
                        "n_blocks_per_stage": n_blocks_per_stage}, n_conv_per_stage_decoder, kernel_sizes, strides,
                       unused_nnunet_kwargs)
        super().__init__(input_channels, n_stages, list(features_per_stage), nn.Conv3d,
                         [list(k) for k in kernel_sizes], [list(s) for s in strides], list(n_blocks_per_stage),
                         num_classes, list(n_conv_per_stage_decoder), conv_bias, nn.InstanceNorm3d,
                         {"eps": norm_eps, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision)
        self._set_patch_rules(strides)


class ResEncUNetSegmentationNetwork(ResEncSegmentationNetwork):
    """``resenc_unet``: the same network; a checkpoint loads into everything but ``decoder.seg_layers`` (family
    ``nnunet_resenc``: nnFM's own pretraining trains the decoder too, nnfm/weights/filters_resenc.py), where
    ``resenc_l`` takes nnssl's encoder only."""

    def pretrained_part(self) -> nn.Module:
        return NetworkWithoutSegLayers(self)


# ---- registry entry (nnfm/registry.py) -------------------------------------------------------------------
from nnfm.conventions import Recipe  # noqa: E402
from nnfm.encoder_entry import EncoderEntry, register_encoder  # noqa: E402  (registered beside the network)
from nnfm.networks.dna_unet import NNUNET_RECIPE  # noqa: E402

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
    scratch_trainer="nnFMTrainer_ResEncL_scratch", weights="resenc_l_openmind_mae",
    **patch_rules(RESENC_L_TOPOLOGY["strides"]),
    description="nnssl / OpenMind ResEnc-L (nnU-Net's ResidualEncoderUNet, MAE on 114k brain MRI)",
    license="CC-BY-4.0 (model card of MIC-DKFZ/ResEncL-OpenMind-MAE)",
    status="loader tested on the published layout; trains at tiny size only on CPU", **_RESENC))


# nnU-Net's ResEnc pattern cut at 5 stages, the fixed pretraining topology of nnFM's own ResEnc weights (issue 27):
# features 32 doubling to nnU-Net's 3D cap of 320 (nnunetv2 2.8.1 default_experiment_planner.py UNet_base_num_features
# 32, UNet_max_features_3d 320), 3x3x3 kernels, isotropic stride 2 after the first stage, residual blocks 1-3-4-6-6 and
# one decoder conv per stage (nnunetv2 2.8.1 experiment_planners/residual_unets/residual_encoder_unet_planners.py
# UNet_blocks_per_stage_encoder / _decoder), conv bias, instance norm eps 1e-5 (default_experiment_planner.py
# arch_kwargs). Total stride 16: every patch axis a multiple of 16 and at least 32 (CPU pretraining crops 32^3).
RESENC_UNET_TOPOLOGY = {
    "n_stages": 5,
    "features_per_stage": [32, 64, 128, 256, 320],
    "kernel_sizes": [[3, 3, 3]] * 5,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4,
    "n_blocks_per_stage": [1, 3, 4, 6, 6],
    "n_conv_per_stage_decoder": [1, 1, 1, 1],
    "conv_bias": True,
    "norm_eps": 1e-5,
}
register_encoder(EncoderEntry(
    name="resenc_unet", network_class=f"{ResEncUNetSegmentationNetwork.__module__}."
                                      f"{ResEncUNetSegmentationNetwork.__qualname__}",
    network_kwargs=RESENC_UNET_TOPOLOGY,
    configuration="3d_fullres", planner="nnfm_planners.nnfm_dna_planner.nnFMFixedTopologyPlanner",
    trainer="nnFMTrainer_ResEncUNet", scratch_trainer="nnFMTrainer_ResEncUNet_scratch",
    # whole-network files (nnFM's export, nnU-Net checkpoints): all but the seg layers (nnfm/weights/filters_resenc.py)
    families=("nnunet_resenc",), weights=None, **patch_rules(RESENC_UNET_TOPOLOGY["strides"]),
    # the weights nnFM pretrains for it see per-image z-scored volumes (nnFM_pretrain synth --encoder resenc_unet)
    input_convention=ZSCORE, recipe=NNUNET_RECIPE,
    description="nnU-Net's ResidualEncoderUNet at a fixed 5-stage topology (nnU-Net's ResEnc blocks 1-3-4-6-6)",
    license="no weights (architecture: dynamic-network-architectures, Apache-2.0)",
    status="random init (nnFM's pretrained weights to come); DNA's keys, planner and loader tested, not trained here"))
