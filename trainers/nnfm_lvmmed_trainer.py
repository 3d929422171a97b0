"""LVM-Med ResNet-50 U-Net trainers (nnU-Net's ``2d`` configuration).

- ``nnFMTrainer_LVMMed``: the published LVM-Med ResNet-50 weights (``lvmmed_resnet50``) by default. The weights
  are licensed CC BY-NC-ND 2.0 (academic research only); the licence is printed into the training log
  whenever they are loaded.
- ``nnFMTrainer_LVMMed_scratch``: same network and recipe, random initialisation.
- Short budgets: ``nnFM_EPOCHS`` / ``nnFM_ITERATIONS`` (as for every nnFM trainer).

Recipe: the encoder entry's ``LVMMED_RECIPE`` (nnfm/networks/lvmmed_segmentation.py, with its source: Adam 1e-4,
no decay, clip 1, one full-resolution output); nnU-Net's loss is also CE + Dice. Epochs, batch size, patch and
augmentation are nnU-Net's.
"""
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMTrainer_LVMMed(nnFMTrainer):
    encoder = "lvmmed_resnet50"

    def _load_pretrained_encoder(self, net) -> None:
        super()._load_pretrained_encoder(net)
        if self.pretrained_report is not None and self.pretrained_report.family == "lvmmed_resnet50":
            from nnfm.weights.registry import LVMMED_LICENSE
            self.print_to_log_file(f"nnFM: the LVM-Med ResNet-50 weights are licensed {LVMMED_LICENSE}.")


class nnFMTrainer_LVMMed_scratch(nnFMTrainer_LVMMed):
    use_pretrained = False
