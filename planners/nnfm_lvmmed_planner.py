"""nnFMLVMMedPlanner: 2d plans for the LVM-Med ResNet-50 U-Net (nnFMPlans_lvmmed_resnet50).

Reused from nnFMPlanner / nnU-Net: fingerprint, target spacing, transpose, resampling, normalisation (nnU-Net's
own scheme per channel), the in-plane geometry of nnU-Net's 2d configuration and the patch / batch search.
Changed: patch axes are multiples of 32 (the ResNet's five 2x downsamplings), starting from the whole median
slice; the memory estimate builds the network on the meta device; the network's input window (0.5 / 99.5
percentiles of the normalised foreground -> [0, 1], then x 255 inside the network) stands in for LVM-Med's
per-image min-max to [0, 255] (LVM-Med dataloader/dataset_ete.py).
"""
from typing import Sequence

import torch

from nnfm.errors import ConfigurationError
from nnfm.planning.intensity import measure_input_window
from nnfm.planning.memory import estimate_training_memory
from nnfm_planners.nnfm_planner import nnFMPlanner


class nnFMLVMMedPlanner(nnFMPlanner):
    # largest side of the initial 2D patch before memory shrinks it (nnU-Net plans 2d up to the median slice)
    max_patch_side = 1024

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "lvmmed_resnet50", weights=None, hires=None, vit_kwargs=None):
        if hires is not None or vit_kwargs:
            raise ConfigurationError("--hires / --vit_kwargs apply to the ViT encoders, not to the LVM-Med ResNet-50.")
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or f"nnFMPlans_{encoder}", overwrite_target_spacing, suppress_transpose,
                         encoder, weights)

    def estimate(self, patch_size: Sequence[int], num_input_channels: int, num_classes: int):
        def build():
            with torch.device("meta"):
                return self.network_class(num_input_channels, num_classes, True, pad_to_stride=False,
                                          **self.network_kwargs)
        return estimate_training_memory(build, num_input_channels, patch_size, bytes_per_activation=2)

    def initial_patch(self, spacing, median_shape) -> list:
        return [self._round_to_stride(min(m, self.max_patch_side)) for m in median_shape]

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        window = measure_input_window(self.dataset, self.determine_reader_writer(), schemes, use_mask,
                                      self.dataset_fingerprint["foreground_intensity_properties_per_channel"])
        return dict(self.network_kwargs, input_window=window, pad_to_stride=False,
                    zero_is_background=[bool(u) for u in use_mask])
