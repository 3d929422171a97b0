"""nnFMPrimusV2Planner: 3d_fullres plans for the PrimusV2 / V3 presets and anatomix-dev-vit (nnFMPlans_<encoder>).

Everything of nnFMPrimusPlanner (patch axes multiples of the 8-voxel token stride, memory estimate on the meta
device with attention modelled explicitly, nnU-Net's batch-size rules, ``input_shape`` = the patch) except:

* the starting patch volume is 128^3, anatomix-dev-vit's pretraining input (neel-dey/anatomix
  ``ANATOMIX_VARIANTS['anatomix-dev-vit']`` input_shape (128, 128, 128); anatomix's registration runs it in 128^3
  windows), clipped to the median image like every nnFM plan;
* intensities: nnU-Net's own normalisation schemes (ExperimentPlanner: CTNormalization for CT, ZScore otherwise),
  not nnssl's z-score for every channel: nnU-Net's own Primus trainers (nnunetv2 primus_trainers.py) train on
  nnUNetPlans, and anatomix-dev-vit's [0, 1] convention is applied inside the network (``input_norm
  "window01"``) with the window this planner measures, as for the anatomix U-Net.
"""
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnfm.networks.primus_v2_segmentation import PrimusV2SegmentationNetwork
from nnfm.planning.intensity import measure_input_window
from nnfm_planners.nnfm_primus_planner import nnFMPrimusPlanner


class nnFMPrimusV2Planner(nnFMPrimusPlanner):
    """Plans every PrimusV2SegmentationNetwork preset of the registry; kwargs and weights from its entry."""
    network_class = PrimusV2SegmentationNetwork
    initial_patch_voxels = 128 ** 3

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "anatomix_dev_vit", weights=None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose, encoder, weights)

    # nnU-Net's choice, not nnFMPrimusPlanner's z-score-everything (see the module docstring)
    determine_normalization_scheme_and_whether_mask_is_used_for_norm = \
        ExperimentPlanner.determine_normalization_scheme_and_whether_mask_is_used_for_norm

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        kwargs = dict(self.network_kwargs, input_shape=[int(p) for p in patch_size])
        if kwargs.get("input_norm") == "window01":
            # 0.5 / 99.5 foreground percentiles in nnU-Net's normalised units -> [0, 1] inside the network
            kwargs["input_window"] = measure_input_window(
                self.dataset, self.determine_reader_writer(), schemes, use_mask,
                self.dataset_fingerprint["foreground_intensity_properties_per_channel"])
            kwargs["zero_is_background"] = [bool(u) for u in use_mask]
        return kwargs
