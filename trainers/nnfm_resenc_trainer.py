"""nnssl / OpenMind ResEnc-L trainers (nnU-Net's ResidualEncoderUNet with an nnssl-pretrained encoder).

- ``nnFMTrainer_ResEncL``: the OpenMind ResEnc-L MAE weights (``resenc_l_openmind_mae``) by default; any file
  that nnU-Net master's ``nnUNetv2_train_pretrained`` takes (an nnssl ``checkpoint_final.pth`` with its
  ``nnssl_adaptation_plan``) works as it is: ``nnFM_plan_and_preprocess -e resenc_l -w FILE``.
- ``nnFMTrainer_ResEncL_scratch``: the same network and schedule, random initialisation.
- ``..._{1,5,10,20,50,100,250}epoch(s)``: short budgets.

Recipe: nnU-Net master's fine-tuning of nnssl checkpoints (MIC-DKFZ/nnUNet
nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py ``PretrainedTrainer``): SGD lr 1e-3, momentum
0.99 (Nesterov), nnU-Net's weight decay 3e-5, the whole network warmed up linearly (50 of 1000 epochs: 5%),
then poly decay; nothing frozen; deep supervision off (``enable_deep_supervision = False``). Only stem and
encoder are loaded (decoder re-initialised), the stem adapted to more input channels by repeat / N.
Departure: PretrainedTrainer fixes batch size 2; nnFM keeps the planned batch (nnU-Net's batch rules).
"""
import torch

from nnfm.networks.resenc_segmentation import ResEncSegmentationNetwork
from nnfm_trainers.nnfm_trainer_variants import nnFMTrainer_nnssl


class nnFMTrainer_ResEncL(nnFMTrainer_nnssl):
    encoder = "resenc_l"
    network_class = ResEncSegmentationNetwork

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # as PretrainedTrainer

    def initialize(self):
        super().initialize()
        self._bare_network().check_patch(self.configuration_manager.patch_size)


class nnFMTrainer_ResEncL_scratch(nnFMTrainer_ResEncL):
    """Same network, random initialisation: no warm-up (nothing pretrained to protect); nnU-Net master's
    PretrainedTrainer uses lr 1e-2 from scratch (``if not self.use_pretrained_weights: self.initial_lr = 1e-2``)."""
    use_pretrained = False
    recipe_lr = 1e-2
