"""nnssl / OpenMind ResEnc-L trainers (nnU-Net's ResidualEncoderUNet with an nnssl-pretrained encoder).

- ``nnFMTrainer_ResEncL``: the OpenMind ResEnc-L MAE weights (``resenc_l_openmind_mae``) by default; any file
  that nnU-Net master's ``nnUNetv2_train_pretrained`` takes (an nnssl ``checkpoint_final.pth`` with its
  ``nnssl_adaptation_plan``) works as it is: ``nnFM_plan_and_preprocess -e resenc_l -w FILE``.
- ``nnFMTrainer_ResEncL_scratch``: the same network and schedule, random initialisation.
- Short budgets: ``nnFM_EPOCHS`` / ``nnFM_ITERATIONS`` (as for every nnFM trainer).

Recipe: nnU-Net master's fine-tuning of nnssl checkpoints, the encoder entry's ``NNSSL_RECIPE``
(nnfm/networks/resenc_segmentation.py, with its source); nothing frozen. Only stem and
encoder are loaded (decoder re-initialised), the stem adapted to more input channels by repeat / N.
Departure: PretrainedTrainer fixes batch size 2; nnFM keeps the planned batch (nnU-Net's batch rules).
"""
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMTrainer_ResEncL(nnFMTrainer):
    encoder = "resenc_l"  # its recipe (nnfm/networks/resenc_segmentation.py NNSSL_RECIPE) is PretrainedTrainer's

    def initialize(self):
        super().initialize()
        self._bare_network().check_patch(self.configuration_manager.patch_size)


class nnFMTrainer_ResEncL_scratch(nnFMTrainer_ResEncL):
    """Same network, random initialisation: no warm-up (nothing pretrained to protect); nnU-Net master's
    PretrainedTrainer uses lr 1e-2 from scratch (``if not self.use_pretrained_weights: self.initial_lr = 1e-2``)."""
    use_pretrained = False  # the recipe's scratch_lr (1e-2) applies
