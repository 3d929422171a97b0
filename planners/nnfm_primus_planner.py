"""nnFMPrimusPlanner: 3d_fullres plans for the nnssl Primus-M ViT (nnFMPlans_primus_m).

Reused from nnFMPlanner / nnU-Net: fingerprint, target spacing, transpose, resampling,
normalisation, the shrink-the-largest-axis patch search and the batch-size rules. Changed:

* patch axes are multiples of 8 (the 8x8x8 patch embedding), starting from nnssl's pretraining
  patch volume (160^3, the ``recommended_downstream_patchsize`` of its adaptation plan) instead
  of nnU-Net's 256^3, clipped to the median image;
* the memory estimate (nnfm.planning.vit_memory: meta-device count, attention modelled explicitly,
  AdamW states) is built on the meta device (Primus-M has 214M parameters: no allocation, no init);
* intensities: no extra window. nnssl pretrained on images z-scored per image, which is exactly
  nnU-Net's ZScoreNormalization for MRI; CT keeps nnU-Net's CTNormalization, also zero-mean /
  unit-variance over the foreground, i.e. in the same units.
"""
from typing import Sequence

import torch

from nnfm.networks.primus_segmentation import PATCH_EMBED_SIZE, PRIMUS_PRESETS, PrimusSegmentationNetwork
from nnfm.planning.vit_memory import estimate_vit_training_memory
from nnfm_planners.nnfm_planner import nnFMPlanner


class nnFMPrimusPlanner(nnFMPlanner):
    network_class = PrimusSegmentationNetwork
    network_kwargs = PRIMUS_PRESETS["primus_m"]
    initial_patch_voxels = 160 ** 3
    # "fused": flash / memory-efficient SDPA (GPU, bf16 autocast; also PyTorch's CPU kernel) saves no N x N
    # attention matrix; "math": PyTorch's reference SDPA keeps heads x N x N probabilities per block for backward
    attention_backend = "fused"

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnFMPlans_primus_m",
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "primus_m", weights=None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose, encoder, weights)

    @property
    def stride(self) -> int:
        return PATCH_EMBED_SIZE

    @property
    def min_axis(self) -> int:
        return PATCH_EMBED_SIZE

    def estimate(self, patch_size: Sequence[int], num_input_channels: int, num_classes: int):
        def build():
            with torch.device("meta"):  # no allocation, initialisation is a no-op
                return self.network_class(num_input_channels, num_classes, False, input_shape=list(patch_size),
                                          **self.network_kwargs)
        return estimate_vit_training_memory(build, num_input_channels, patch_size, bytes_per_activation=2,
                                            attention=self.attention_backend, patch=PATCH_EMBED_SIZE)

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        # input_shape is the patch: Eva's position embedding and RoPE tables are built for its token grid
        return dict(self.network_kwargs, input_shape=[int(p) for p in patch_size])


class nnFMPrimusTinyPlanner(nnFMPrimusPlanner):
    """The same planning for the tiny Primus (embed 48, depth 4) that tests and CPU runs use."""
    network_kwargs = PRIMUS_PRESETS["primus_tiny"]

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnFMPlans_primus_tiny",
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "primus_tiny", weights=None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose, encoder, weights)
