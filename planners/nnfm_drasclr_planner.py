"""nnFMDrasCLRPlanner: 3d_fullres plans for the DrasCLR encoder (nnFMPlans_drasclr, nnFMPlans_drasclr_tiny).

Reused from nnFMPlanner / nnU-Net: fingerprint, transpose, resampling, normalisation schemes (CTNormalization for
CT, ZScoreNormalization otherwise), the memory-driven patch and batch search. Changed, after the authors
(batmanlab/DrasCLR@2d07e07):

* target spacing 1 mm isotropic: DrasCLR resamples every CT to 1 mm isotropic before cutting its 32^3 patches
  (preprocess/4_patchify_images.py ``convert_to_isotropic(isoSpacing=1.0)``), so its kernels saw 1 mm voxels;
* patch axes are multiples of 32 (the encoder's total stride = the pretraining patch, ``--patch_size 32``);
* intensity window: CT channels get the authors' HU window [-1024, 240] (data/copd_patch.py: ``np.clip(x, -1024,
  240)``, then ``(x + 1024) / 632 - 1``) expressed in nnU-Net's CT-normalised units with the dataset's foreground
  mean / std (what CTNormalization subtracts and divides by); the network clips to it and scales to [-1, 1]. Other
  channels (DrasCLR saw CT only) get the measured 0.5 / 99.5 percentile window of nnFMPlanner, scaled to [-1, 1].
"""
from typing import List

from nnfm.networks.drasclr import DrasCLRSegmentationNetwork
from nnfm.planning.intensity import measure_input_window
from nnfm_planners.nnfm_planner import nnFMPlanner

# data/copd_patch.py: np.clip(pch, -1024, 240) -> [-1, 1]; preprocess/README.md step 4: --lowerThreshold -1024
# --upperThreshold 240
HU_WINDOW = (-1024.0, 240.0)
# preprocess/4_patchify_images.py convert_to_isotropic(isoSpacing=1.0)
PRETRAINING_SPACING = (1.0, 1.0, 1.0)


def hu_window_in_ct_units(intensity_properties: dict, window=HU_WINDOW) -> List[float]:
    """The HU window in the units nnU-Net's CTNormalization produces: (HU - mean) / std of the dataset foreground."""
    mean, std = float(intensity_properties["mean"]), max(float(intensity_properties["std"]), 1e-8)
    return [round((window[0] - mean) / std, 4), round((window[1] - mean) / std, 4)]


class nnFMDrasCLRPlanner(nnFMPlanner):
    network_class = DrasCLRSegmentationNetwork

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = None,
                 overwrite_target_spacing=PRETRAINING_SPACING, suppress_transpose: bool = False,
                 encoder: str = "drasclr", weights=None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or f"nnFMPlans_{encoder}",
                         [float(s) for s in overwrite_target_spacing] if overwrite_target_spacing else None,
                         suppress_transpose, encoder, weights)

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        properties = self.dataset_fingerprint["foreground_intensity_properties_per_channel"]
        measured = None
        windows = []
        for channel, scheme in enumerate(schemes):
            if scheme == "CTNormalization":
                windows.append(hu_window_in_ct_units(properties[str(channel)]))
                continue
            if measured is None:
                measured = measure_input_window(self.dataset, self.determine_reader_writer(), schemes, use_mask,
                                                properties)
            windows.append(measured[channel])
        return dict(self.network_kwargs, input_window=windows, zero_is_background=[bool(u) for u in use_mask],
                    pad_to_stride=False)

    def extra_plans_fields(self, estimate) -> dict:
        return {"target_spacing_source": "1 mm isotropic, as DrasCLR's pretraining (preprocess/4_patchify_images.py)",
                "location": "cell centres of each 32^3 cell in tile coordinates (documentation/drasclr.md)"}
