"""nnU-Net's own trainer with nnFM's budget overrides, for same-budget baselines in benchmarks."""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnUNetTrainer_nnFMBudget(nnUNetTrainer):
    """Unchanged nnUNetTrainer, except that nnFM_EPOCHS / nnFM_ITERATIONS / nnFM_VAL_ITERATIONS apply."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        nnFMTrainer._apply_budget_from_environment(self)
