"""DrasCLR trainers: the location-conditioned DrasCLR encoder + U-Net decoder through nnU-Net's own pipeline.

- ``nnFMTrainer_DrasCLR``: the published COPDGene encoder (``drasclr_copdgene``) by default.
- ``nnFMTrainer_DrasCLR_scratch``: the same network and recipe, random initialisation.
- ``nnFMTrainer_DrasCLRTiny`` (+ ``_scratch``): widths 4..16 and 2 experts, for CPU runs and tests (no weights).
- Short budgets: ``nnFM_EPOCHS`` / ``nnFM_ITERATIONS`` (as for every nnFM trainer).

Recipe: the authors publish no fine-tuning script (batmanlab/DrasCLR has pretraining, train.py, and feature
extraction, extract_feature.py, only), so the trainer uses the optimiser of their code: SGD, lr 0.01
(run_train.sh ``--lr=0.01``), momentum 0.9 and weight decay 1e-4 (train.py defaults), cosine decay
(train.py ``--cos``, ``adjust_learning_rate``: lr * 0.5 * (1 + cos(pi * epoch / epochs))), no warm-up
(run_train.sh ``--warm-up=0``; that flag is about the neighbour loss anyway). Everything else (loss, deep
supervision, augmentation, sliding window) is nnU-Net's.
"""
from nnfm.networks.drasclr import DrasCLRSegmentationNetwork
from nnfm_trainers.nnfm_trainer import nnFMTrainer

# train.py: torch.optim.SGD(..., args.lr, momentum=args.momentum (0.9), weight_decay=args.weight_decay (1e-4))
DRASCLR_MOMENTUM = 0.9


class nnFMTrainer_DrasCLR(nnFMTrainer):
    encoder = "drasclr"
    network_class = DrasCLRSegmentationNetwork
    optimizer_name = "SGD"
    recipe_lr = 1e-2
    recipe_weight_decay = 1e-4
    head_warmup_fraction = 0.0
    full_warmup_fraction = 0.0
    lr_decay = "cosine"

    def build_optimizer(self):
        optimizer, scheduler = super().build_optimizer()
        for group in optimizer.param_groups:  # the authors' plain momentum, not nnU-Net's 0.99 Nesterov
            group["momentum"], group["nesterov"] = DRASCLR_MOMENTUM, False
        return optimizer, scheduler


class nnFMTrainer_DrasCLR_scratch(nnFMTrainer_DrasCLR):
    use_pretrained = False


class nnFMTrainer_DrasCLRTiny(nnFMTrainer_DrasCLR):
    encoder = "drasclr_tiny"


class nnFMTrainer_DrasCLRTiny_scratch(nnFMTrainer_DrasCLRTiny):
    use_pretrained = False

