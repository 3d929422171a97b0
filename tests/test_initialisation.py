"""nnFM builds its networks as nnU-Net does: get_network_from_plans, then the network's ``initialize`` hook.

nnU-Net 2.8.1 (nnunetv2/utilities/get_network_from_plans.py) applies ``network.apply(network.initialize)``
after building; nnFM's builders used to skip it (head weight std 0.147 instead of 0.420, issue 11).
"""
import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnfm.networks.dinov3_segmentation import DINOv3SegmentationNetwork
from nnfm.networks.from_plans import class_path
from nnfm.networks.primus_segmentation import PRIMUS_PRESETS, PrimusSegmentationNetwork
from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork

TINY_VIT = {"vit": "vit_base_patch16_dinov3", "vit_kwargs": {"embed_dim": 32, "depth": 4, "num_heads": 2},
            "drop_path_rate": 0.0, "input_norm": "none"}


def _plans(network_class: type, arch_kwargs: dict, patch: list) -> PlansManager:
    configuration = {"data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                     "patch_size": patch, "median_image_size_in_voxels": patch, "spacing": [1.0] * len(patch),
                     "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
                     "architecture": {"network_class_name": class_path(network_class), "arch_kwargs": arch_kwargs,
                                      "_kw_requires_import": []}}
    return PlansManager({"dataset_name": "Dataset999_X", "plans_name": "p", "configurations": {"c": configuration},
                         "original_median_spacing_after_transp": [1.0] * 3, "image_reader_writer": "NibabelIO",
                         "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
                         "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {}})


def _trainer(name: str):
    from nnfm_trainers.nnfm_primus_trainer import nnFMTrainer_PrimusTiny
    from nnfm_trainers.nnfm_trainer import nnFMTrainer
    from nnfm_trainers.nnfm_vit_trainer import nnFMViTTrainer
    return {"anatomix": nnFMTrainer, "vit": nnFMViTTrainer, "primus": nnFMTrainer_PrimusTiny}[name]


# nnU-Net's arch_kwargs of a small 3d_fullres PlainConvUNet (as nnUNetPlans.json writes them)
NNUNET_PLAINCONV_KWARGS = {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
                           "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                           "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
                           "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                           "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                           "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                           "nonlin_kwargs": {"inplace": True}}

CASES = {
    "anatomix": (AnatomixSegmentationNetwork, {"num_downs": 4, "ngf": 16, "pad_to_stride": False}, [32, 32, 32], True),
    "vit": (DINOv3SegmentationNetwork, TINY_VIT, [32, 32], False),
    "primus": (PrimusSegmentationNetwork, dict(PRIMUS_PRESETS["primus_tiny"], input_shape=[16, 16, 16]),
               [16, 16, 16], False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_nnfm_builder_initialises_like_nnunets_get_network_from_plans(name):
    network_class, arch_kwargs, patch, deep_supervision = CASES[name]
    plans = _plans(network_class, arch_kwargs, patch)
    configuration = plans.get_configuration("c")
    torch.manual_seed(0)
    ours = _trainer(name).build_network_architecture(plans, configuration, 1, 3, deep_supervision)
    torch.manual_seed(0)
    nnunet = get_network_from_plans(configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                                    configuration.network_arch_init_kwargs_req_import, 1, 3, allow_init=True,
                                    deep_supervision=deep_supervision)
    theirs = dict(nnunet.named_parameters())
    for key, value in ours.named_parameters():
        if value.numel() > 1:
            assert torch.allclose(value.std(), theirs[key].std(), rtol=1e-3), (key, value.std(), theirs[key].std())


def test_foreign_plans_get_the_network_defaults_with_nnunets_initialisation():
    """Plain nnUNetPlans name nnU-Net's PlainConvUNet: nnFM builds its own network with defaults, He-initialised."""
    plans = _plans(type("PlainConvUNet", (), {}), {}, [32, 32, 32])
    plans.plans["configurations"]["c"]["architecture"]["network_class_name"] = \
        "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    net = _trainer("anatomix").build_network_architecture(plans, plans.get_configuration("c"), 1, 3, True)
    head = net.decoder.seg_layers[0].weight
    # kaiming_normal_(a=1e-2), fan_in 16: std = sqrt(2 / (1 + 1e-4) / 16) = 0.354 (torch's default would give ~0.14)
    assert abs(head.std().item() - 0.354) < 0.15 and torch.count_nonzero(net.decoder.seg_layers[0].bias) == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_nnfm_networks_carry_the_cpu_thread_choice(name):
    """Training and nnUNetv2_predict build through build_network_architecture: the network adapts its CPU threads
    (nnfm/training/cpu_threads.py), nnU-Net's own network through nnFMTrainer_nnUNetPlans too."""
    from nnfm.training.cpu_threads import CPUShare
    from nnfm_trainers.nnfm_nnunet_plans_trainer import nnFMTrainer_nnUNetPlans

    network_class, arch_kwargs, patch, deep_supervision = CASES[name]
    plans = _plans(network_class, arch_kwargs, patch)
    net = _trainer(name).build_network_architecture(plans, plans.get_configuration("c"), 1, 3, deep_supervision)
    assert isinstance(getattr(net, "_nnfm_cpu_share", None), CPUShare)
    plans = _plans(type("PlainConvUNet", (), {}), NNUNET_PLAINCONV_KWARGS, [32, 32, 32])
    architecture = plans.plans["configurations"]["c"]["architecture"]
    architecture["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    architecture["_kw_requires_import"] = ["conv_op", "norm_op", "nonlin"]
    net = nnFMTrainer_nnUNetPlans.build_network_architecture(plans, plans.get_configuration("c"), 1, 3, True)
    assert isinstance(getattr(net, "_nnfm_cpu_share", None), CPUShare)
