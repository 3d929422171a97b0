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
import shutil
from typing import Optional, Sequence

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

from nnfm.errors import ConfigurationError
from nnfm.networks.dinov3_segmentation import PATCH, VIT_PRESETS, DINOv3SegmentationNetwork
from nnfm.networks.from_plans import class_path
from nnfm.networks.token_decoder import evenly_spaced_blocks
from nnfm.planning.intensity import measure_input_window
from nnfm.planning.vit_memory import estimate_vit_training_memory
from nnfm_planners.nnfm_planner import GB, nnFMPlanner


class nnFMViTPlanner(nnFMPlanner):
    network_class = DINOv3SegmentationNetwork
    # largest side of the initial patch before memory shrinks it (MedDINOv3 trains up to 896 px)
    max_patch_side = 1024

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: Optional[str] = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "meddinov3_vitb16", weights: Optional[str] = None, hires: Optional[int] = None,
                 vit_kwargs: Optional[dict] = None):
        if encoder not in VIT_PRESETS:
            raise ConfigurationError(f"Unknown ViT encoder {encoder!r}; choose one of {sorted(VIT_PRESETS)}.")
        if hires is not None and (hires < PATCH or hires % PATCH):
            raise ConfigurationError(f"--hires {hires}: the slice size must be a multiple of {PATCH} (e.g. 512, 896).")
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or f"nnFMPlans_{encoder}", overwrite_target_spacing, suppress_transpose,
                         encoder=encoder, weights=weights)
        self.preset = VIT_PRESETS[encoder]
        self.hires = hires
        self.vit_kwargs = dict(vit_kwargs or {})
        self.weights = weights or self.preset["weights"]

    # ---- topology ------------------------------------------------------------------------------
    @property
    def stride(self) -> int:
        return PATCH

    @property
    def min_axis(self) -> int:
        return PATCH

    def network_kwargs_for_plans(self) -> dict:
        with torch.device("meta"):
            probe = DINOv3SegmentationNetwork(1, 1, vit=self.preset["vit"], vit_kwargs=self.vit_kwargs,
                                              input_norm="none")
        return {"vit": self.preset["vit"], "vit_kwargs": self.vit_kwargs,
                "aggregation_blocks": evenly_spaced_blocks(probe.num_layers, min(4, probe.num_layers)),
                "drop_path_rate": self.preset["drop_path_rate"],
                # the weights' own input convention (MedDINOv3 "nnunet", DINOv3 "imagenet"; sources in
                # nnfm.networks.dinov3_segmentation), applied inside the network's forward
                "input_norm": self.preset["input_norm"],
                "autocast_dtype": "bfloat16"}

    def estimate(self, patch_size: Sequence[int], num_input_channels: int, num_classes: int):
        kwargs = self.network_kwargs_for_plans()
        # planned for the GPU: fused attention (O(N) memory), bf16 activations
        # shapes only (meta device): no weight initialisation cost. The intensity window is left out: it
        # validates its values (impossible on meta) and saves a few input-sized tensors, negligible here
        kwargs["input_norm"] = "none"

        def factory():
            with torch.device("meta"):
                return DINOv3SegmentationNetwork(num_input_channels, num_classes, False, **kwargs)

        return estimate_vit_training_memory(factory,
            num_input_channels, patch_size, bytes_per_activation=2, attention="fused")

    def initial_patch(self, spacing, median_shape) -> list:
        # 2D: the whole median slice (up to max_patch_side) before memory shrinks it
        return [self._round_to_stride(min(m, self.max_patch_side)) for m in median_shape]

    # ---- configuration ---------------------------------------------------------------------------
    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        if len(spacing) != 2:
            raise ValueError("nnFMViTPlanner plans the 2D configuration only.")
        num_input_channels = len(self.dataset_json["channel_names"])
        num_classes = len(self.dataset_json["labels"])
        patch, batch, estimate = self.plan_patch_and_batch(spacing, median_shape, num_input_channels,
                                                           num_classes, approximate_n_voxels_dataset)
        resampling_data, resampling_data_kwargs, resampling_seg, resampling_seg_kwargs = self.determine_resampling()
        resampling_softmax, resampling_softmax_kwargs = self.determine_segmentation_softmax_export_fn()
        schemes, use_mask = self.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        window = measure_input_window(self.dataset, self.determine_reader_writer(), schemes, use_mask,
                                      self.dataset_fingerprint["foreground_intensity_properties_per_channel"])
        arch_kwargs = dict(self.network_kwargs_for_plans(), input_window=window)
        return {
            "data_identifier": data_identifier,
            "preprocessor_name": self.preprocessor_name,
            "batch_size": int(batch),
            "patch_size": [int(p) for p in patch],
            "median_image_size_in_voxels": [float(m) for m in median_shape],
            "spacing": [float(s) for s in spacing],
            "normalization_schemes": schemes,
            "use_mask_for_norm": use_mask,
            "resampling_fn_data": resampling_data.__name__,
            "resampling_fn_seg": resampling_seg.__name__,
            "resampling_fn_data_kwargs": resampling_data_kwargs,
            "resampling_fn_seg_kwargs": resampling_seg_kwargs,
            "resampling_fn_probabilities": resampling_softmax.__name__,
            "resampling_fn_probabilities_kwargs": resampling_softmax_kwargs,
            "architecture": {"network_class_name": class_path(self.network_class), "arch_kwargs": arch_kwargs,
                             "_kw_requires_import": []},
            "batch_dice": True,  # nnU-Net's choice for 2d
            "nnfm": {
                "encoder": self.encoder,
                "weights": self.weights,
                "hires": self.hires,
                "tokens_per_patch": estimate.tokens,
                "estimated_training_memory_gb": round(estimate.total_bytes(batch) / GB, 3),
                "memory_estimate": "fused attention (GPU), bf16 activations, AdamW states",
                "gpu_memory_target_gb": self.UNet_vram_target_GB,
            },
        }

    def plan_experiment(self) -> dict:
        transpose_forward, transpose_backward = self.determine_transpose()
        fullres_spacing = np.array(self.determine_fullres_target_spacing(), dtype=float)
        spacing = fullres_spacing[transpose_forward]
        new_shapes = [compute_new_shape(shape, s, fullres_spacing) for s, shape in
                      zip(self.dataset_fingerprint["spacings"], self.dataset_fingerprint["shapes_after_crop"])]
        median_shape = np.median(new_shapes, 0)[transpose_forward]
        spacing_2d, median_2d = spacing[1:].copy(), median_shape[1:].copy()
        if self.hires is not None:
            # finer in-plane spacing so the median slice's longer side becomes `hires` pixels
            factor = float(max(median_2d)) / self.hires
            spacing_2d = spacing_2d * factor
            median_2d = median_2d / factor
        n_pixels = float(np.prod(median_shape, dtype=np.float64) * self.dataset_json["numTraining"])
        if self.hires is not None:
            n_pixels *= float(np.prod(median_2d) / np.prod(median_shape[1:]))
        config = self.get_plans_for_configuration(spacing_2d, median_2d, self.generate_data_identifier("2d"),
                                                  n_pixels, {})
        plans = {
            "dataset_name": self.dataset_name,
            "plans_name": self.plans_identifier,
            "original_median_spacing_after_transp": [float(i) for i in
                                                     np.median(self.dataset_fingerprint["spacings"], 0)[transpose_forward]],
            "original_median_shape_after_transp": [int(round(i)) for i in
                                                   np.median(self.dataset_fingerprint["shapes_after_crop"], 0)[transpose_forward]],
            "image_reader_writer": self.determine_reader_writer().__name__,
            "transpose_forward": [int(i) for i in transpose_forward],
            "transpose_backward": [int(i) for i in transpose_backward],
            "configurations": {"2d": config},
            "experiment_planner_used": self.__class__.__name__,
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel":
                self.dataset_fingerprint["foreground_intensity_properties_per_channel"],
        }
        shutil.copy(join(self.raw_dataset_folder, "dataset.json"),
                    join(nnUNet_preprocessed, self.dataset_name, "dataset.json"))
        self.plans = plans
        self.save_plans(plans)
        return plans


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
