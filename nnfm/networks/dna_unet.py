"""What nnFM adds to nnU-Net's own U-Nets (dynamic_network_architectures' ``PlainConvUNet`` and
``ResidualEncoderUNet``) at a fixed topology, stated once for both; and nnU-Net's own fine-tuning recipe.

:class:`FixedTopologyUNet` is a mixin in front of the DNA class (``class X(FixedTopologyUNet, PlainConvUNet)``): it
checks the plain kwargs the plans hold, records the strides, tells nnFM's trainer and planner the patch rules
(``stride`` / ``min_size`` / ``pad_to_stride``), gives nnU-Net's deep-supervision scales and refuses an input that
does not fit before it reaches the network. It adds no module and no parameter: the state dict stays DNA's.

``pretrained_part()`` is the module a checkpoint of the network's family loads into strictly
(nnfm/weights/loading.py ``pretrained_target``): ``encoder`` by default (nnssl ResEnc files: only stem and encoder
transfer); a network whose family also loads its decoder returns more (:class:`NetworkWithoutSegLayers`).
"""
import math
from typing import List, Sequence

import torch
from torch import nn

from nnfm.conventions import Recipe
from nnfm.errors import ConfigurationError, PatchSizeError
from nnfm.networks.stride_padding import check_divisible

# nnU-Net's own recipe: nnunetv2 2.8.1 nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py, __init__ (initial_lr 1e-2,
# weight_decay 3e-5, enable_deep_supervision True) and configure_optimizers (SGD momentum 0.99, nesterov=True,
# PolyLRScheduler); no warm-up, nothing frozen
NNUNET_RECIPE = Recipe("SGD", 1e-2, 3e-5, "poly", "nnunetv2 2.8.1 nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py",
                       momentum=0.99, nesterov=True, deep_supervision=True)

# the ops nnU-Net 2.8.1 plans for every 3D U-Net (nnunetv2/experiment_planning/experiment_planners/
# default_experiment_planner.py get_plans_for_configuration, arch_kwargs): what these networks are built with
NNUNET_3D_OPS = {"conv_op": "Conv3d", "norm_op": "InstanceNorm3d", "nonlin": "LeakyReLU"}


def total_stride(strides: Sequence[Sequence[int]]) -> List[int]:
    """Per-axis product of the stage strides (the factor every patch axis must be a multiple of)."""
    return [int(math.prod(axis)) for axis in zip(*strides)]


def patch_rules(strides: Sequence[Sequence[int]]) -> dict:
    """A DNA U-Net's registry ``token_stride`` and ``min_axis`` from its strides: every patch axis a multiple of the
    total stride and at least twice it (instance norm needs more than one voxel at the bottleneck)."""
    stride = max(total_stride(strides))
    return {"token_stride": stride, "min_axis": 2 * stride}


def check_topology(network: str, encoder: str, n_stages: int, per_stage: dict,
                   n_conv_per_stage_decoder: Sequence[int], kernel_sizes, strides, nnunet_kwargs: dict) -> None:
    """ConfigurationError unless the kwargs describe a 3D U-Net with ``n_stages`` stages built from nnU-Net's 3D ops.

    ``per_stage``: name -> list that needs one entry per stage; ``nnunet_kwargs``: the other arch_kwargs of an
    nnU-Net plans file (conv_op, norm_op, nonlin, dropout_op ...), which must be the ops these networks use."""
    wrong = [f"{k} has {len(v)}" for k, v in per_stage.items() if len(v) != n_stages]
    if len(n_conv_per_stage_decoder) != n_stages - 1:
        wrong.append(f"n_conv_per_stage_decoder has {len(n_conv_per_stage_decoder)} (needs n_stages - 1)")
    if any(len(k) != 3 for k in kernel_sizes) or any(len(s) != 3 for s in strides):
        wrong.append("kernels and strides need 3 axes")
    for key, wanted in NNUNET_3D_OPS.items():
        given = nnunet_kwargs.get(key)
        name = getattr(given, "__name__", str(given))
        if given is not None and not name.endswith(wanted):
            wrong.append(f"{key} is {name} (nnFM builds {wanted})")
    if nnunet_kwargs.get("dropout_op") is not None:
        wrong.append(f"dropout_op is {nnunet_kwargs['dropout_op']} (nnU-Net plans none)")
    if wrong:
        raise ConfigurationError(f"{network} is nnU-Net's 3D U-Net with {n_stages} stages: {'; '.join(wrong)}. "
                                 f"Re-plan with nnFM_plan_and_preprocess -e {encoder}.")


class FixedTopologyUNet:
    """Mixin for DNA U-Nets (before the DNA class in the bases): patch rules, deep-supervision scales, input check.

    Call :meth:`_set_patch_rules` at the end of ``__init__``. Every input axis must be a multiple of its total
    stride and at least twice it (instance norm needs more than one voxel at the bottleneck); nothing is padded.
    """
    ndim = 3

    def _set_patch_rules(self, strides: Sequence[Sequence[int]]) -> None:
        self.strides_per_stage = [list(s) for s in strides]
        self.stride_per_axis = total_stride(strides)
        # nnFMTrainer checks the planned patch against these (pad_to_stride False: no silent padding)
        rules = patch_rules(strides)
        self.stride, self.min_size = rules["token_stride"], rules["min_axis"]
        self.pad_to_stride = False

    @property
    def deep_supervision_scales(self) -> List[List[float]]:
        """nnU-Net's scales (nnunetv2 2.8.1 nnUNetTrainer._get_deep_supervision_scales: 1 / cumprod of the
        strides, the last dropped): 1 at full resolution, then the inverse cumulative strides of the decoder levels."""
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

    def pretrained_part(self) -> nn.Module:
        """The module a checkpoint of this network's checkpoint families loads into (strictly)."""
        return self.encoder

    def forward(self, x: torch.Tensor):
        self.check_patch(x.shape[2:])
        return super().forward(x)


class NetworkWithoutSegLayers(nn.Module):
    """A view of a DNA U-Net without its per-class layers: ``encoder.*``, ``decoder.stages.*`` and
    ``decoder.transpconvs.*`` of the network itself (the same modules, so loading into the view loads the network).

    nnU-Net loads everything but ``.seg_layers.`` from a checkpoint into a new dataset (nnunetv2 2.8.1
    nnunetv2/run/load_pretrained_weights.py); ``decoder.encoder.*``, the decoder's reference to the encoder, is left
    out because it is the encoder again."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.encoder = network.encoder
        self.decoder = nn.Module()
        self.decoder.stages = network.decoder.stages
        self.decoder.transpconvs = network.decoder.transpconvs
