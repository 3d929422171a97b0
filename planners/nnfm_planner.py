"""nnFMPlanner: nnU-Net's experiment planner for a fixed, pretrained network topology.

Reused from nnU-Net unchanged: fingerprint, target spacing, transpose, resampling, reader/writer
and normalisation scheme. Replaced: the network (the pretrained one, not a searched U-Net),
the patch size (divisible by the network's stride, as large as the memory target allows), the
batch size (same memory estimate, nnU-Net's rules: at least 2, at most 5% of the dataset's voxels)
and the input convention of the weights (nnfm/conventions.py; recorded with the weights, else the encoder's):
the network's ``input_norm``, the normalisation it needs nnU-Net to plan (``planned_normalization``: every channel;
``hu_window``: CT channels raw) and, for windowed conventions, the measured intensity window.
"""
import pydoc
import shutil
from typing import Optional, Sequence

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.preprocessing.normalization import default_normalization_schemes
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization
from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

from nnfm.planning.intensity import measure_input_window
from nnfm.planning.memory import estimate_training_memory
from nnfm.registry import get_encoder
from nnfm.weights.input_convention import planned_convention

GB = 1024 ** 3


class nnFMPlanner(ExperimentPlanner):
    """Plans one registered encoder (nnfm/registry.py): its network class, preset kwargs, token stride,
    minimum axis and default weights come from the registry entry of ``encoder``."""
    # starting patch volume, as nnU-Net's 3D planner (256**3 voxels before clipping to the median shape)
    initial_patch_voxels = 256 ** 3

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnFMPlans_anatomix",
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "anatomix", weights: Optional[str] = None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.entry = get_encoder(encoder)
        self.encoder = encoder
        self.network_class = pydoc.locate(self.entry.network_class)
        self.network_kwargs = self.entry.kwargs()
        # the plans store the resolved weights (registry name, path or "random"), so the trainer reads one place
        self.weights = weights or self.entry.weights or "random"
        # what the weights were pretrained on, applied by the network (ConfigurationError if it cannot)
        self.input_convention = planned_convention(self.entry, self.weights)
        if len(self.network_class.INPUT_NORMS) > 1:
            self.network_kwargs["input_norm"] = self.input_convention.name

    # ---- topology ---------------------------------------------------------------------
    @property
    def stride(self) -> int:
        return self.entry.token_stride

    @property
    def min_axis(self) -> int:
        return self.entry.min_axis

    def _round_to_stride(self, size: float) -> int:
        return max(self.min_axis, int(np.ceil(size / self.stride)) * self.stride)

    def estimate(self, patch_size: Sequence[int], num_input_channels: int, num_classes: int):
        return estimate_training_memory(
            lambda: self.network_class(num_input_channels, num_classes, True, **self.network_kwargs),
            num_input_channels, patch_size, bytes_per_activation=2)

    def initial_patch(self, spacing, median_shape) -> list:
        """The patch before memory shrinks it: nnU-Net's initial volume in the spacing's aspect ratio."""
        aspect = 1 / np.asarray(spacing, dtype=float)
        patch = aspect * (self.initial_patch_voxels / np.prod(aspect)) ** (1 / 3)
        return [self._round_to_stride(min(p, m)) for p, m in zip(patch, median_shape)]

    def plan_patch_and_batch(self, spacing, median_shape, num_input_channels: int, num_classes: int,
                             approximate_n_voxels_dataset: float):
        target = self.UNet_vram_target_GB * GB
        patch = self.initial_patch(spacing, median_shape)
        estimate = self.estimate(patch, num_input_channels, num_classes)
        while estimate.total_bytes(self.UNet_min_batch_size) > target:
            shrinkable = [i for i, p in enumerate(patch) if p - self.stride >= self.min_axis]
            if not shrinkable:
                break
            # shrink the axis that is largest relative to the median image, as nnU-Net does
            axis = max(shrinkable, key=lambda i: patch[i] / median_shape[i])
            patch[axis] -= self.stride
            estimate = self.estimate(patch, num_input_channels, num_classes)
        batch = estimate.max_batch_size(target)
        five_percent = round(approximate_n_voxels_dataset * self.max_dataset_covered / np.prod(patch, dtype=np.float64))
        batch = max(min(batch, five_percent), self.UNet_min_batch_size)
        return patch, batch, estimate

    # ---- configuration ------------------------------------------------------------------
    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        ndim = 2 if self.entry.configuration == "2d" else 3
        if len(spacing) != ndim:
            raise ValueError(f"Encoder {self.encoder!r} plans the {self.entry.configuration} configuration only "
                             f"({ndim}D spacing), got spacing {list(spacing)}.")
        num_input_channels = len(self.dataset_json["channel_names"])
        num_classes = len(self.dataset_json["labels"])
        patch, batch, estimate = self.plan_patch_and_batch(spacing, median_shape, num_input_channels,
                                                           num_classes, approximate_n_voxels_dataset)
        resampling_data, resampling_data_kwargs, resampling_seg, resampling_seg_kwargs = self.determine_resampling()
        resampling_softmax, resampling_softmax_kwargs = self.determine_segmentation_softmax_export_fn()
        schemes, use_mask = self.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        arch_kwargs = self.architecture_kwargs(patch, schemes, use_mask)
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
            "architecture": {"network_class_name": self.entry.network_class, "arch_kwargs": arch_kwargs,
                             "_kw_requires_import": []},
            "batch_dice": ndim == 2,  # nnU-Net's choice: batch Dice for 2d, per-sample for 3d
            "nnfm": dict({"encoder": self.encoder, "weights": self.weights,
                          "input_convention": self.input_convention.name,
                          "estimated_training_memory_gb": round(estimate.total_bytes(batch) / GB, 3),
                          "gpu_memory_target_gb": self.UNet_vram_target_GB}, **self.extra_plans_fields(estimate)),
        }

    def extra_plans_fields(self, estimate) -> dict:
        """More facts for the plans' ``nnfm`` section (subclasses: token counts, memory model)."""
        return {}

    def determine_normalization_scheme_and_whether_mask_is_used_for_norm(self):
        """nnU-Net's choice, changed where the weights' input convention needs another scheme: its
        ``planned_normalization`` for every channel (zscore: nnssl z-scores every image, CT included), and CT
        channels left raw for a ``hu_window`` convention (the network clips them to the HU window itself, not
        nnU-Net's CTNormalization clip to the labelled foreground's 0.5-99.5 percentiles). The nonzero-mask rule
        is nnU-Net's (normalise inside the mask when cropping to it keeps < 3/4 of the image, median)."""
        schemes, use_mask = super().determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        convention = self.input_convention
        if convention.planned_normalization is not None:
            schemes = [convention.planned_normalization] * len(schemes)
        elif convention.hu_window is not None:
            schemes = ["NoNormalization" if ct else s for s, ct in zip(schemes, self.raw_hu_channels())]
        masked = self.dataset_fingerprint["median_relative_size_after_cropping"] < (3 / 4.)
        use_mask = [bool(masked and getattr(default_normalization_schemes, s)
                         .leaves_pixels_outside_mask_at_zero_if_use_mask_for_norm_is_true) for s in schemes]
        return schemes, use_mask

    def raw_hu_channels(self) -> list:
        """Per channel: planned as raw HU, i.e. a CT channel (nnU-Net would pick CTNormalization) under a
        ``hu_window`` convention."""
        if self.input_convention.hu_window is None:
            return [False] * len(self.dataset_json["channel_names"])
        return [get_normalization_scheme(name) is CTNormalization
                for name in self.dataset_json["channel_names"].values()]

    def measured_window(self, schemes, use_mask) -> list:
        """Each channel's 0.5 / 99.5 foreground percentiles in the planned (normalised) units."""
        return measure_input_window(self.dataset, self.determine_reader_writer(), schemes, use_mask,
                                    self.dataset_fingerprint["foreground_intensity_properties_per_channel"])

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        """The network's plain kwargs stored in the plans (subclasses for other encoders override this)."""
        kwargs = dict(self.network_kwargs, pad_to_stride=False,
                      strides=[[1, 1, 1]] + [[2, 2, 2]] * self.network_kwargs["num_downs"])
        if self.input_convention.output_range is not None:
            # channels nnU-Net normalises inside the nonzero mask: their 0 (outside / padding) is the encoder's 0
            kwargs.update(input_window=self.measured_window(schemes, use_mask),
                          zero_is_background=[bool(u) for u in use_mask])
        return kwargs

    def planning_geometry(self, spacing, median_shape, n_voxels: float):
        """(spacing, median shape, voxel count) the configuration is planned on; 2D planners take the in-plane
        axes (nnU-Net's 2d configuration) and may change the in-plane spacing (high resolution)."""
        if self.entry.configuration == "2d":
            return spacing[1:].copy(), median_shape[1:].copy(), n_voxels
        return spacing, median_shape, n_voxels

    def plan_experiment(self) -> dict:
        from nnfm_planners.dimensionality import refuse_2d_dataset_for_3d_encoder

        configuration = self.entry.configuration
        if configuration == "3d_fullres":
            refuse_2d_dataset_for_3d_encoder(self.dataset_fingerprint, self.dataset_json, self.encoder)
        transpose_forward, transpose_backward = self.determine_transpose()
        fullres_spacing = np.array(self.determine_fullres_target_spacing(), dtype=float)
        new_shapes = [compute_new_shape(shape, s, fullres_spacing) for s, shape in
                      zip(self.dataset_fingerprint["spacings"], self.dataset_fingerprint["shapes_after_crop"])]
        median_shape = np.median(new_shapes, 0)[transpose_forward]
        n_voxels = float(np.prod(median_shape, dtype=np.float64) * self.dataset_json["numTraining"])
        spacing, median, n_voxels = self.planning_geometry(fullres_spacing[transpose_forward], median_shape, n_voxels)
        config = self.get_plans_for_configuration(spacing, median, self.generate_data_identifier(configuration),
                                                  n_voxels, {})
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
            "configurations": {configuration: config},
            "experiment_planner_used": self.__class__.__name__,
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel":
                self.dataset_fingerprint["foreground_intensity_properties_per_channel"],
        }
        # nnU-Net's trainers read dataset.json from the preprocessed folder
        shutil.copy(join(self.raw_dataset_folder, "dataset.json"),
                    join(nnUNet_preprocessed, self.dataset_name, "dataset.json"))
        self.plans = plans
        self.save_plans(plans)
        return plans
