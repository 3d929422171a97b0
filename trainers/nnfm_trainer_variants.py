"""Trainer variants, each overriding one thing (nnU-Net's naming: _scratch, _Adam, _5epochs ...).

Fine-tuning recipes (documentation/design.md, "Fine-tuning recipes"; measured in documentation/benchmarks.md):
each is the recipe of the authors named, applied to the same network and nnU-Net pipeline.
"""
import torch

from nnfm.conventions import Recipe
from nnfm.networks.dna_unet import NNUNET_RECIPE
from nnfm.networks.resenc_segmentation import NNSSL_RECIPE
from nnfm.networks.segmentation_unet import ANATOMIX_RECIPE
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMTrainer_scratch(nnFMTrainer):
    """Same network and recipe, random initialisation (never a warm-up: no pretrained features to protect)."""
    use_pretrained = False


class nnFMTrainer_SGD(nnFMTrainer):
    """nnU-Net's from-scratch recipe on the pretrained network: SGD lr 1e-2, momentum 0.99 (Nesterov),
    weight decay 3e-5, poly decay from epoch 0; no frozen or warm-up epochs
    (nnunetv2 2.8.1, nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py, ``configure_optimizers``)."""
    base_recipe = NNUNET_RECIPE  # nnfm/networks/dna_unet.py, with its source


class nnFMTrainer_noWarmup(nnFMTrainer_SGD):
    """Former name of nnFMTrainer_SGD (kept so that result folders trained under it still predict)."""


class nnFMTrainer_Adam(nnFMTrainer):
    """nnFMTrainer's default, named: the anatomix authors' fine-tuning recipe (the anatomix entry's recipe,
    nnfm/networks/segmentation_unet.py ANATOMIX_RECIPE: Adam lr 2e-4, no weight decay, cosine, nothing frozen)."""
    base_recipe = ANATOMIX_RECIPE


class nnFMTrainer_nnssl(nnFMTrainer):
    """nnssl / OpenMind fine-tuning of pretrained CNNs (nnU-Net master's PretrainedTrainer, the ResEnc-L entry's
    recipe NNSSL_RECIPE: SGD lr 1e-3, momentum 0.99 Nesterov, weight decay 3e-5, 5% linear warm-up then poly).
    PretrainedTrainer also turns deep supervision off and fixes batch size 2; on the anatomix U-Net nnFM keeps
    nnU-Net's deep supervision and the planned batch."""
    base_recipe = NNSSL_RECIPE
    recipe_changes = {"deep_supervision": True}


class nnFMTrainer_headWarmup(nnFMTrainer):
    """nnFM's first default: SGD lr 1e-2 with 5% of the epochs training the heads on a frozen encoder,
    then 5% warming up the whole network, then poly (no published source: nnFM's own guess)."""
    base_recipe = Recipe("SGD", 1e-2, 3e-5, "poly", "nnFM's first default (no published source)", momentum=0.99,
                         head_warmup_fraction=0.05, full_warmup_fraction=0.05)


# Short budgets written out as nnU-Net writes its own (nnunetv2/training/nnUNetTrainer/variants/training_length/
# nnUNetTrainer_Xepochs.py): quick checks of a plans file. Any other budget: nnFM_EPOCHS=N with any trainer.
# The former generated <trainer>_<N>epoch(s) names resolve in former_budget_names.py.
class nnFMTrainer_1epoch(nnFMTrainer):
    """One epoch: does this plans file train, validate and write a checkpoint (as nnUNetTrainer_1epoch)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self._apply_budget_from_environment()  # an explicit nnFM_EPOCHS still wins


class nnFMTrainer_5epochs(nnFMTrainer):
    """Five epochs: a quick run whose loss should fall (as nnUNetTrainer_5epochs)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5
        self._apply_budget_from_environment()  # an explicit nnFM_EPOCHS still wins
