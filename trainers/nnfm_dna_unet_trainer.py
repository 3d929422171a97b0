"""nnU-Net's own U-Nets as nnFM encoders at a fixed pretraining topology (nnfm/networks/plainconv_segmentation.py,
nnfm/networks/resenc_segmentation.py ``resenc_unet``), planned by planners/nnfm_dna_planner.py.

- ``nnFMTrainer_PlainConvUNet``: nnU-Net's PlainConvUNet (5 stages); a checkpoint loads into everything but
  ``decoder.seg_layers`` (family ``nnunet_plainconv``: nnFM's pretrained file, or an nnU-Net ``checkpoint_final.pth``
  of the same topology).
- ``nnFMTrainer_ResEncUNet``: nnU-Net's ResidualEncoderUNet (5 stages, blocks 1-3-4-6-6); a checkpoint loads into
  everything but ``decoder.seg_layers`` (family ``nnunet_resenc``: nnFM's pretraining export, or an nnU-Net
  checkpoint of the same topology; an nnssl pretraining file is refused with the fix, ``-e resenc_l``).
- ``..._scratch``: the same network and recipe, random initialisation.

Recipe: nnUNetTrainer's (``NNUNET_RECIPE``, nnfm/networks/dna_unet.py: SGD lr 1e-2, Nesterov momentum 0.99, weight
decay 3e-5, poly, deep supervision), so that against nnU-Net's own trainer the fixed topology and the initialisation
are the differences. ``plainconv_unet``'s default weights are nnFM's embedded ``plainconv_unet_synth_nnfm``;
``resenc_unet`` names none yet: without ``-w`` at planning or ``nnFM_WEIGHTS`` ``nnFMTrainer_ResEncUNet`` starts from
random initialisation too and says so in the log and ``nnfm_pretrained.json``.
Other budgets: ``nnFM_EPOCHS=N`` (no generated ``_Nepochs`` classes).
"""
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMTrainer_PlainConvUNet(nnFMTrainer):
    encoder = "plainconv_unet"


class nnFMTrainer_PlainConvUNet_scratch(nnFMTrainer_PlainConvUNet):
    """Same network and recipe, random initialisation whatever the plans or nnFM_WEIGHTS name."""
    use_pretrained = False


class nnFMTrainer_ResEncUNet(nnFMTrainer):
    encoder = "resenc_unet"


class nnFMTrainer_ResEncUNet_scratch(nnFMTrainer_ResEncUNet):
    """Same network and recipe, random initialisation whatever the plans or nnFM_WEIGHTS name."""
    use_pretrained = False
