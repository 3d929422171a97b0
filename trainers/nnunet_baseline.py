"""nnU-Net's own trainer with nnFM's budget overrides, for same-budget baselines in benchmarks."""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnfm.training.fold_guard import OneTrainingPerFold
from nnfm.training.run_overrides import apply_patch_and_batch_overrides, limit_trainer_validation_cases
from nnfm.training.validation import RecordsValidatedCheckpoint
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnUNetTrainer_nnFMBudget(OneTrainingPerFold, RecordsValidatedCheckpoint, nnUNetTrainer):
    """Unchanged nnUNetTrainer, except that nnFM's budget variables apply (nnFM_EPOCHS / nnFM_ITERATIONS /
    nnFM_VAL_ITERATIONS, and nnFM_PATCH_SIZE / nnFM_BATCH_SIZE / nnFM_VAL_CASES: nnfm/training/run_overrides.py)
    and, as for nnFM's trainers, one training per fold (nnfm/training/fold_guard.py) and a checkpoint every epoch
    (training unchanged; nnU-Net saves every 50, so a killed short benchmark run restarted from scratch)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self.refuse_busy_fold(plans, configuration, fold)
        plans, overrides = apply_patch_and_batch_overrides(plans, configuration)
        super().__init__(plans, configuration, fold, dataset_json, device)
        for line in overrides:
            self.print_to_log_file(line)
        nnFMTrainer._apply_budget_from_environment(self)
        self.save_every = 1

    def do_split(self):
        tr_keys, val_keys = super().do_split()
        return tr_keys, limit_trainer_validation_cases(self, val_keys)
