"""nnFMPrimusV2Planner: 3d_fullres plans for the PrimusV2 / V3 presets and anatomix-dev-vit (nnFMPlans_<encoder>).

Everything of nnFMPrimusPlanner (patch axes multiples of the 8-voxel token stride, memory estimate on the meta
device with attention modelled explicitly, nnU-Net's batch-size rules, ``input_shape`` = the patch) except:

* the starting patch volume is 128^3, anatomix-dev-vit's pretraining input (neel-dey/anatomix
  ``ANATOMIX_VARIANTS['anatomix-dev-vit']`` input_shape (128, 128, 128); anatomix's registration runs it in 128^3
  windows), clipped to the median image like every nnFM plan;
* intensities: the weights' convention (nnfm/conventions.py): ``nnunet`` for the PrimusV2/V3 presets (nnU-Net's
  own schemes, as nnU-Net's Primus trainers train on nnUNetPlans), ``window01`` for anatomix-dev-vit (applied inside
  the network with the window this planner measures, as for the anatomix U-Net).
"""
from nnfm_planners.nnfm_primus_planner import nnFMPrimusPlanner


class nnFMPrimusV2Planner(nnFMPrimusPlanner):
    """Plans every PrimusV2SegmentationNetwork preset of the registry; kwargs and weights from its entry."""
    initial_patch_voxels = 128 ** 3

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "anatomix_dev_vit", weights=None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose, encoder, weights)

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        kwargs = dict(self.network_kwargs, input_shape=[int(p) for p in patch_size])
        if self.input_convention.output_range is not None:
            # 0.5 / 99.5 foreground percentiles in nnU-Net's normalised units -> [0, 1] inside the network
            kwargs["input_window"] = self.measured_window(schemes, use_mask)
            kwargs["zero_is_background"] = [bool(u) for u in use_mask]
        return kwargs
