"""nnFMViTPlanner: 2D plans for the DINOv3 / MedDINOv3 ViT path (configuration ``2d``).

Reused from nnU-Net unchanged: fingerprint, target spacing, transpose, resampling, reader/writer,
normalisation. Replaced (as in nnFMPlanner): the network (a pretrained ViT, not a searched U-Net),
the patch size (every axis a multiple of the ViT's 16-pixel patches, as large as the median slice
and the memory target allow), the batch size (a training-memory estimate that counts attention in
the number of tokens, nnfm.planning.vit_memory; nnU-Net's rules: at least 2, at most 5% of the
dataset's pixels) and the intensity window of the network's input.

``hires`` (``nnFM_plan_and_preprocess --hires SIZE``): MedDINOv3-style high resolution. The
in-plane target spacing is made finer so that the median slice's longer axis becomes SIZE pixels
(their strongest setting resamples slices to 896 px, a 56 x 56 token grid); the out-of-plane
spacing stays as nnU-Net chose it (2D configurations resample in-plane only).
"""
import json
import os
from typing import Optional, Sequence

import numpy as np
import torch

from nnfm.errors import ConfigurationError
from nnfm.networks.dinov3_segmentation import PATCH, DINOv3SegmentationNetwork
from nnfm.networks.token_decoder import evenly_spaced_blocks
from nnfm.planning.intensity import measure_input_window
from nnfm.planning.vit_memory import estimate_vit_training_memory
from nnfm.registry import get_encoder
from nnfm_planners.nnfm_planner import nnFMPlanner


class nnFMViTPlanner(nnFMPlanner):
    # largest side of the initial patch before memory shrinks it (MedDINOv3 trains up to 896 px)
    max_patch_side = 1024

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: Optional[str] = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "meddinov3_vitb16", weights: Optional[str] = None, hires: Optional[int] = None,
                 vit_kwargs: Optional[dict] = None):
        if get_encoder(encoder).configuration != "2d":
            raise ConfigurationError(f"nnFMViTPlanner plans 2D ViT encoders; {encoder!r} is "
                                     f"{get_encoder(encoder).configuration}. Use nnFM_plan_and_preprocess -e {encoder}.")
        check_hires(hires)
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or f"nnFMPlans_{encoder}", overwrite_target_spacing, suppress_transpose,
                         encoder=encoder, weights=weights)
        self.hires = hires
        self.vit_kwargs = dict(vit_kwargs or {})

    def network_kwargs_for_plans(self) -> dict:
        with torch.device("meta"):
            probe = DINOv3SegmentationNetwork(1, 1, vit=self.network_kwargs["vit"], vit_kwargs=self.vit_kwargs,
                                              input_norm="none")
        # input_norm: the weights' own input convention (MedDINOv3 "nnunet", DINOv3 "imagenet"; sources in
        # nnfm.networks.dinov3_segmentation), applied inside the network's forward
        return dict(self.network_kwargs, vit_kwargs=self.vit_kwargs,
                    aggregation_blocks=evenly_spaced_blocks(probe.num_layers, min(4, probe.num_layers)),
                    autocast_dtype="bfloat16")

    def estimate(self, patch_size: Sequence[int], num_input_channels: int, num_classes: int):
        kwargs = self.network_kwargs_for_plans()
        # planned for the GPU: fused attention (O(N) memory), bf16 activations
        # shapes only (meta device): no weight initialisation cost. The intensity window is left out: it
        # validates its values (impossible on meta) and saves a few input-sized tensors, negligible here
        kwargs["input_norm"] = "none"

        def factory():
            with torch.device("meta"):
                return DINOv3SegmentationNetwork(num_input_channels, num_classes, False, **kwargs)

        return estimate_vit_training_memory(factory, num_input_channels, patch_size, bytes_per_activation=2,
                                            attention="fused")

    def initial_patch(self, spacing, median_shape) -> list:
        # 2D: the whole median slice (up to max_patch_side) before memory shrinks it
        return [self._round_to_stride(min(m, self.max_patch_side)) for m in median_shape]

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        window = measure_input_window(self.dataset, self.determine_reader_writer(), schemes, use_mask,
                                      self.dataset_fingerprint["foreground_intensity_properties_per_channel"])
        return dict(self.network_kwargs_for_plans(), input_window=window)

    def extra_plans_fields(self, estimate) -> dict:
        return {"hires": self.hires, "tokens_per_patch": estimate.tokens,
                "memory_estimate": "fused attention (GPU), bf16 activations, AdamW states"}

    def planning_geometry(self, spacing, median_shape, n_voxels: float):
        spacing_2d, median_2d, n_pixels = super().planning_geometry(spacing, median_shape, n_voxels)
        if self.hires is not None:
            # finer in-plane spacing so the median slice's longer side becomes `hires` pixels
            factor = float(max(median_2d)) / self.hires
            spacing_2d, median_2d = spacing_2d * factor, median_2d / factor
            n_pixels *= float(np.prod(median_2d) / np.prod(median_shape[1:]))
        return spacing_2d, median_2d, n_pixels


def check_hires(hires: Optional[int]) -> None:
    """``--hires SIZE`` (pixels) must be a multiple of the ViT's patch size; ConfigurationError otherwise."""
    if hires is not None and (hires < PATCH or hires % PATCH):
        raise ConfigurationError(f"--hires {hires}: the slice size must be a multiple of {PATCH} (e.g. 512, 896).")


def vit_kwargs_from_env_or_arg(value: Optional[str]) -> dict:
    """``--vit_kwargs '{"embed_dim": 32, "depth": 4, "num_heads": 2}'`` (tiny test models, experiments)."""
    value = value if value is not None else os.environ.get("nnFM_VIT_KWARGS")
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"--vit_kwargs must be a JSON object, got {value!r} ({error})") from None
    if not isinstance(parsed, dict):
        raise ConfigurationError(f"--vit_kwargs must be a JSON object, got {value!r}")
    return parsed
