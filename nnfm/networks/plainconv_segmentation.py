"""nnU-Net's default U-Net, dynamic_network_architectures' ``PlainConvUNet``, as an nnFM encoder at a fixed topology.

The class IS DNA's ``PlainConvUNet`` (a subclass that only turns the plans' plain JSON into its constructor
arguments; the patch rules come from nnfm/networks/dna_unet.py), built with exactly what nnU-Net 2.8.1 plans for a
3D U-Net (nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py, ``arch_kwargs``): Conv3d,
conv bias, InstanceNorm3d (eps 1e-5, affine), no dropout, LeakyReLU (inplace; DNA's default slope 0.01), conv ->
norm -> nonlin, transposed-convolution decoder (DNA's ``UNetDecoder``) with one 1x1x1 segmentation layer per level.
Its state dict is therefore an nnU-Net ``PlainConvUNet`` state dict (``encoder.stages.*``, ``decoder.stages.*``,
``decoder.transpconvs.*``, ``decoder.seg_layers.*``): a ``checkpoint_final.pth`` of nnU-Net at this topology loads
into it, and a checkpoint of it is one nnU-Net's ``-pretrained_weights`` and nnFMTrainer_nnUNetPlans take.

Pretrained weights load into the whole network except the per-class ``decoder.seg_layers`` (checkpoint family
``nnunet_plainconv``, nnfm/weights/filters_plainconv.py; nnU-Net's own rule, nnunetv2/run/load_pretrained_weights.py):
``pretrained_part()`` is encoder + decoder without them.

Topology (preset ``PLAINCONV_TOPOLOGY``, registry entry ``plainconv_unet``): 5 stages, features 32-64-128-256-320,
3x3x3 kernels, stride 1 then 2 (isotropic), two convolutions per stage in the encoder and in the decoder. Why fixed
at 5 stages: the total stride 16 lets CPU pretraining use 32^3 crops (every axis a multiple of 16 and at least 32),
and a 5-stage file covers nnU-Net's 4-stage Hippocampus plans entirely and the first 5 encoder stages of a 6-stage
3d_fullres plan (nnFMTrainer_nnUNetPlans loads it by name and shape, decoder levels matched by resolution:
nnfm/weights/shape_fit.py).
"""
from typing import Sequence

from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnfm.conventions import ZSCORE
from nnfm.networks.dna_unet import (NNUNET_RECIPE, FixedTopologyUNet, NetworkWithoutSegLayers, check_topology,
                                    patch_rules)

# nnU-Net 2.8.1's 3D plans at 5 stages: features 32 * 2^i capped at 320 (nnunetv2 2.8.1
# experiment_planners/default_experiment_planner.py UNet_base_num_features 32, UNet_max_features_3d 320), two convs
# per stage in encoder and decoder (UNet_blocks_per_stage_encoder / _decoder = 2), conv_bias True, instance norm
# eps 1e-5 (arch_kwargs there); 3x3x3 kernels and isotropic stride 2, what it plans at isotropic spacing
PLAINCONV_TOPOLOGY = {
    "n_stages": 5,
    "features_per_stage": [32, 64, 128, 256, 320],
    "kernel_sizes": [[3, 3, 3]] * 5,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4,
    "n_conv_per_stage": [2, 2, 2, 2, 2],
    "n_conv_per_stage_decoder": [2, 2, 2, 2],
    "conv_bias": True,
    "norm_eps": 1e-5,
}


class PlainConvSegmentationNetwork(FixedTopologyUNet, PlainConvUNet):
    """nnU-Net's 3D PlainConvUNet from plain kwargs: ``(input_channels, num_classes, deep_supervision, **topology)``.

    Also takes the ``arch_kwargs`` of an nnU-Net plans file as they are (conv_op, norm_op, nonlin ... must be the
    3D ops above). Input (B, C, X, Y, Z) with every axis a multiple of ``stride`` and >= ``min_size``; output
    (B, classes, X, Y, Z), or with deep supervision a list at 1, 1/2, ... (``deep_supervision_scales``).
    Raises ConfigurationError for a topology that is not a 3D U-Net and PatchSizeError for bad inputs.
    """
    # the one input convention its planner gives it (nnfm/conventions.py): per-image z-scores, fed as they are
    input_norm = ZSCORE.name
    INPUT_NORMS = (ZSCORE.name,)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 n_stages: int = PLAINCONV_TOPOLOGY["n_stages"],
                 features_per_stage: Sequence[int] = PLAINCONV_TOPOLOGY["features_per_stage"],
                 kernel_sizes: Sequence[Sequence[int]] = PLAINCONV_TOPOLOGY["kernel_sizes"],
                 strides: Sequence[Sequence[int]] = PLAINCONV_TOPOLOGY["strides"],
                 n_conv_per_stage: Sequence[int] = PLAINCONV_TOPOLOGY["n_conv_per_stage"],
                 n_conv_per_stage_decoder: Sequence[int] = PLAINCONV_TOPOLOGY["n_conv_per_stage_decoder"],
                 conv_bias: bool = True, norm_eps: float = 1e-5, **unused_nnunet_kwargs):
        check_topology("PlainConvSegmentationNetwork", "plainconv_unet", n_stages,
                       {"features_per_stage": features_per_stage, "kernel_sizes": kernel_sizes, "strides": strides,
                        "n_conv_per_stage": n_conv_per_stage}, n_conv_per_stage_decoder, kernel_sizes, strides,
                       unused_nnunet_kwargs)
        super().__init__(input_channels, n_stages, list(features_per_stage), nn.Conv3d,
                         [list(k) for k in kernel_sizes], [list(s) for s in strides], list(n_conv_per_stage),
                         num_classes, list(n_conv_per_stage_decoder), conv_bias, nn.InstanceNorm3d,
                         {"eps": norm_eps, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision)
        self._set_patch_rules(strides)

    def pretrained_part(self) -> nn.Module:
        """Encoder and decoder without ``decoder.seg_layers``: what a ``nnunet_plainconv`` checkpoint loads into."""
        return NetworkWithoutSegLayers(self)


# ---- registry entry (nnfm/registry.py) -------------------------------------------------------------------
from nnfm.encoder_entry import EncoderEntry, register_encoder  # noqa: E402  (registered beside the network)

register_encoder(EncoderEntry(
    name="plainconv_unet", network_class=f"{PlainConvSegmentationNetwork.__module__}."
                                         f"{PlainConvSegmentationNetwork.__qualname__}",
    network_kwargs=PLAINCONV_TOPOLOGY, configuration="3d_fullres",
    planner="nnfm_planners.nnfm_dna_planner.nnFMFixedTopologyPlanner",
    trainer="nnFMTrainer_PlainConvUNet", scratch_trainer="nnFMTrainer_PlainConvUNet_scratch",
    families=("nnunet_plainconv",), weights="plainconv_unet_synth_nnfm", **patch_rules(PLAINCONV_TOPOLOGY["strides"]),
    # the weights nnFM pretrains for it see per-image z-scored volumes (nnFM_pretrain synth --encoder plainconv_unet)
    input_convention=ZSCORE, recipe=NNUNET_RECIPE,
    description="nnU-Net's PlainConvUNet at a fixed 5-stage topology (what nnU-Net plans at isotropic spacing)",
    license="Apache-2.0 (nnFM's weights, synthetic data only; architecture: dynamic-network-architectures)",
    status="nnFM's synthetic-data weights (embedded); trains + predicts on CPU (tests)"))
