"""nnFMPrimusPlanner: 3d_fullres plans for the nnssl Primus-M ViT (nnFMPlans_primus_m).

Reused from nnFMPlanner / nnU-Net: fingerprint, target spacing, transpose, resampling,
normalisation, the shrink-the-largest-axis patch search and the batch-size rules. Changed:

* patch axes are multiples of 8 (the 8x8x8 patch embedding), starting from nnssl's pretraining
  patch volume (160^3, the ``recommended_downstream_patchsize`` of its adaptation plan) instead
  of nnU-Net's 256^3, clipped to the median image;
* the memory estimate (nnfm.planning.vit_memory: meta-device count, attention modelled explicitly,
  AdamW states) is built on the meta device (Primus-M has 214M parameters: no allocation, no init);
* intensities: nnssl's convention, every channel z-scored per image (nnssl's preprocessing,
  MIC-DKFZ/nnssl src/nnssl/preprocessing/preprocessors/default_preprocessor.py ``normalize``: the plans'
  scheme per channel on the whole image before resampling; OpenMind is MRI, z-scored): the ``zscore``
  convention of the weights, which nnFMPlanner plans as nnU-Net's ``ZScoreNormalization`` for every channel,
  CT included (nnU-Net would pick CTNormalization: a dataset-wide clip the encoder never saw). No window.
"""
import math
from typing import Sequence

import torch

from nnfm.planning.vit_memory import estimate_vit_training_memory
from nnfm.weights.nnssl_adaptation import NNSSL_DEFAULT_PATCH
from nnfm_planners.nnfm_planner import nnFMPlanner


class nnFMPrimusPlanner(nnFMPlanner):
    """Plans every Primus preset of the registry (primus_m, primus_tiny): kwargs and weights from its entry."""
    # nnssl's recommended downstream patch (160^3, nnssl AbstractTrainer; nnFMResEncPlanner reads a checkpoint's own)
    initial_patch_voxels = math.prod(NNSSL_DEFAULT_PATCH)
    # "fused": flash / memory-efficient SDPA (GPU, bf16 autocast; also PyTorch's CPU kernel) saves no N x N
    # attention matrix; "math": PyTorch's reference SDPA keeps heads x N x N probabilities per block for backward
    attention_backend = "fused"

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "primus_m", weights=None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or f"nnFMPlans_{encoder}", overwrite_target_spacing, suppress_transpose,
                         encoder, weights)

    def estimate(self, patch_size: Sequence[int], num_input_channels: int, num_classes: int):
        def build():
            with torch.device("meta"):  # no allocation, initialisation is a no-op
                return self.network_class(num_input_channels, num_classes, False, input_shape=list(patch_size),
                                          **self.network_kwargs)
        return estimate_vit_training_memory(build, num_input_channels, patch_size, bytes_per_activation=2,
                                            attention=self.attention_backend, patch=self.entry.token_stride)

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        # input_shape is the patch: Eva's position embedding and RoPE tables are built for its token grid
        return dict(self.network_kwargs, input_shape=[int(p) for p in patch_size])
