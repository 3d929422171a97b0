"""nnFMResEncPlanner: 3d_fullres plans for an nnssl-pretrained ResEnc U-Net (nnFMPlans_resenc_l).

A small subclass of nnFMFixedTopologyPlanner (planners/nnfm_dna_planner.py: patch, batch, memory and normalisation
for a fixed nnU-Net U-Net), which it gives the topology and starting patch of the checkpoint's nnssl adaptation plan.

Decision: the network is nnU-Net's ``ResidualEncoderUNet`` with the FIXED topology of the checkpoint, not the
topology nnU-Net's ResEnc planner would search for the dataset. The weights fix the number of stages, the
features, the residual blocks and the 3x3x3 kernels; the strides are not in the weights, but the pretrained
filters were learned with isotropic 2x downsampling at 1 mm, and nnU-Net master builds the same fixed "ResEncL"
for fine-tuning (MIC-DKFZ/nnUNet nnunetv2/utilities/get_network_via_name.py; like_nnssl.py copies the
adaptation plan's architecture into the plans). So:

* topology: from the checkpoint's ``nnssl_adaptation_plan`` when the weights file is at hand at planning time
  (a local ``-w FILE``, or a registry file already in nnFM's cache), else nnssl's ResEncL preset; the plans
  record which (``nnfm.nnssl_adaptation.source``);
* spacing: nnU-Net's target spacing for the dataset, as nnU-Net master's default adaptation mode
  ``default_nnunet`` (like_nnssl.py ``new_spacing_from_mode``). To plan like the pretraining (OpenMind: 1 mm
  isotropic, the plan's ``pretrain_spacing``) pass ``-overwrite_target_spacing 1 1 1``;
* normalisation: ``ZScoreNormalization`` for every channel, CT included (like_nnssl.py
  ``get_new_normalization_format``; nnssl default_preprocessor.py z-scores each image);
* patch: starts from the volume of the checkpoint's ``recommended_downstream_patchsize`` (160^3 for OpenMind,
  what like_nnssl.py plans as is) in the spacing's aspect ratio, clipped to the median image, every axis a
  multiple of the total stride (32) and at least twice it; then nnFM's memory search shrinks it for the GPU
  target (nnU-Net master keeps 160^3 and batch 2; nnFM keeps nnU-Net's batch rules).
"""
import torch

from nnfm.weights.nnssl_adaptation import adaptation_for_planning
from nnfm_planners.nnfm_dna_planner import nnFMFixedTopologyPlanner


class nnFMResEncPlanner(nnFMFixedTopologyPlanner):
    """nnFMFixedTopologyPlanner with the topology and the starting patch of the weights' nnssl adaptation plan."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 encoder: str = "resenc_l", weights=None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose, encoder, weights)
        self.adaptation = adaptation_for_planning(self.weights)
        self.network_kwargs = dict(self.network_kwargs, **self.adaptation.topology)
        self.check_isotropic()  # the checkpoint's topology
        self.initial_patch_voxels = float(torch.tensor(self.adaptation.recommended_downstream_patchsize,
                                                       dtype=torch.float64).prod())

    def extra_plans_fields(self, estimate) -> dict:
        return {"nnssl_adaptation": self.adaptation.to_plans(),
                "topology": "fixed by the checkpoint (nnU-Net master's fine-tuning builds the same network)"}
