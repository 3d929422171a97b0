"""nnFMDrasCLRPlanner: 3d_fullres plans for the DrasCLR encoder (nnFMPlans_drasclr, nnFMPlans_drasclr_tiny).

Reused from nnFMPlanner / nnU-Net: fingerprint, transpose, resampling, the memory-driven patch and batch search.
Changed, after the authors (batmanlab/DrasCLR@2d07e07), with the numbers of the ``hu_window`` convention
(nnfm/conventions.py HU_WINDOW, which names the sources):

* target spacing: the convention's 1 mm isotropic, the grid DrasCLR's kernels saw;
* patch axes are multiples of 32 (the encoder's total stride = the pretraining patch, ``--patch_size 32``);
* intensities: CT channels are planned raw (nnU-Net's NoNormalization; nnFMPlanner) and the network clips them to
  the convention's HU window and scales it to [-1, 1]. nnU-Net's CTNormalization would first clip to the labelled
  foreground's 0.5 / 99.5 percentiles, which on lung CT whose labels exclude parenchyma saturates air and lung.
  Other channels (DrasCLR saw CT only) get the measured 0.5 / 99.5 percentile window, scaled to [-1, 1].
"""
from nnfm.conventions import HU_WINDOW
from nnfm_planners.nnfm_planner import nnFMPlanner


class nnFMDrasCLRPlanner(nnFMPlanner):
    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = None,
                 overwrite_target_spacing=HU_WINDOW.spacing_mm, suppress_transpose: bool = False,
                 encoder: str = "drasclr", weights=None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or f"nnFMPlans_{encoder}",
                         [float(s) for s in overwrite_target_spacing] if overwrite_target_spacing else None,
                         suppress_transpose, encoder, weights)

    def architecture_kwargs(self, patch_size, schemes, use_mask) -> dict:
        raw_hu = self.raw_hu_channels()
        measured = None if all(raw_hu) else self.measured_window(schemes, use_mask)
        # raw-HU channels (CT): the convention's HU window; others: their measured window
        windows = [list(self.input_convention.hu_window) if hu else measured[c] for c, hu in enumerate(raw_hu)]
        return dict(self.network_kwargs, input_window=windows, zero_is_background=[bool(u) for u in use_mask],
                    pad_to_stride=False)

    def extra_plans_fields(self, estimate) -> dict:
        return {"target_spacing_source": "1 mm isotropic, as DrasCLR's pretraining (preprocess/4_patchify_images.py)",
                "location": "cell centres of each 32^3 cell in tile coordinates (documentation/drasclr.md)"}
