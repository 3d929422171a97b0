"""nnFMFixedTopologyPlanner: 3d_fullres plans for nnU-Net's own U-Nets (dynamic_network_architectures'
``PlainConvUNet`` / ``ResidualEncoderUNet``) at the FIXED topology of an encoder entry (``-e plainconv_unet``,
``-e resenc_unet``; nnFMResEncPlanner adds nnssl's adaptation plan on top for ``-e resenc_l``).

Decision: the topology is the pretrained one (the weights fix stages, features, blocks, kernels and strides), not
the one nnU-Net's planner would search for the dataset. What is planned for it:

* spacing, transpose, resampling: nnU-Net's (nnFMPlanner keeps ExperimentPlanner's);
* normalisation: the weights' input convention; ``zscore`` plans nnU-Net's ``ZScoreNormalization`` for every
  channel, CT included (per-image z-scores are what nnFM's pretraining and nnssl feed these networks; nnFMPlanner
  ``determine_normalization_scheme_and_whether_mask_is_used_for_norm``);
* patch: nnU-Net's initial 256^3 voxels in the spacing's aspect ratio (nnunetv2 2.8.1 default_experiment_planner.py
  ``initial_patch_size``; ``initial_patch_voxels`` here), clipped to the median image, every axis rounded up to a
  multiple of the total stride and at least twice it (instance norm needs more than one voxel at the bottleneck),
  then shrunk one stride at a time on the axis largest relative to the median image until the training-memory
  estimate at nnU-Net's minimum batch (2) fits the GPU target;
* batch: as many as the memory estimate allows, at most 5% of the dataset's voxels, at least 2 (nnU-Net's rules,
  default_experiment_planner.py ``max_dataset_covered`` / ``UNet_min_batch_size``);
* memory: the network built on PyTorch's meta device (no allocation), every tensor autograd keeps counted at 2 bytes
  (mixed precision), with deep supervision as the encoder's recipe trains it (nnfm/planning/memory.py).
"""
from typing import Sequence

import torch

from nnfm.errors import ConfigurationError
from nnfm.networks.dna_unet import total_stride
from nnfm.planning.memory import estimate_training_memory
from nnfm_planners.nnfm_planner import nnFMPlanner


class nnFMFixedTopologyPlanner(nnFMPlanner):
    """Plans patch and batch for ``self.network_kwargs`` (the entry's preset; subclasses may replace it in
    ``__init__``). The total stride must be the same on every axis."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "plainconv_unet", weights=None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or f"nnFMPlans_{encoder}", overwrite_target_spacing, suppress_transpose,
                         encoder, weights)
        self.check_isotropic()

    def check_isotropic(self) -> int:
        """The total stride; ConfigurationError when the topology downsamples the axes by different factors."""
        strides = total_stride(self.network_kwargs["strides"])
        if len(set(strides)) != 1:
            raise ConfigurationError(f"Encoder {self.encoder!r}: its topology downsamples the axes by {strides}; "
                                     f"nnFM plans isotropic fixed topologies only (all nnssl and nnFM presets are).")
        return strides[0]

    @property
    def stride(self) -> int:
        return self.check_isotropic()

    @property
    def min_axis(self) -> int:
        return 2 * self.stride  # instance norm needs more than one voxel at the bottleneck

    def estimate(self, patch_size: Sequence[int], num_input_channels: int, num_classes: int):
        deep_supervision = self.entry.recipe.deep_supervision  # the heads the trainer will train

        def build():
            with torch.device("meta"):  # ResEnc-L has 102M parameters: no allocation, no initialisation
                return self.network_class(num_input_channels, num_classes, deep_supervision, **self.network_kwargs)
        return estimate_training_memory(build, num_input_channels, patch_size, bytes_per_activation=2)

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        return dict(self.network_kwargs)

    def extra_plans_fields(self, estimate) -> dict:
        return {"topology": f"fixed by the encoder entry {self.encoder!r} (the pretrained topology, not searched)"}
