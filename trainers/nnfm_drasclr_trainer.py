"""DrasCLR trainers: the location-conditioned DrasCLR encoder + U-Net decoder through nnU-Net's own pipeline.

- ``nnFMTrainer_DrasCLR``: the published COPDGene encoder (``drasclr_copdgene``) by default.
- ``nnFMTrainer_DrasCLR_scratch``: the same network and recipe, random initialisation.
- ``nnFMTrainer_DrasCLRTiny`` (+ ``_scratch``): widths 4..16 and 2 experts, for CPU runs and tests (no weights).
- Short budgets: ``nnFM_EPOCHS`` / ``nnFM_ITERATIONS`` (as for every nnFM trainer).

Recipe: the encoder entry's ``DRASCLR_RECIPE`` (nnfm/networks/drasclr.py): the authors publish no fine-tuning
script, so it is the optimiser of their pretraining code. Everything else (loss, deep supervision, augmentation,
sliding window) is nnU-Net's.
"""
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMTrainer_DrasCLR(nnFMTrainer):
    encoder = "drasclr"


class nnFMTrainer_DrasCLR_scratch(nnFMTrainer_DrasCLR):
    use_pretrained = False


class nnFMTrainer_DrasCLRTiny(nnFMTrainer_DrasCLR):
    encoder = "drasclr_tiny"


class nnFMTrainer_DrasCLRTiny_scratch(nnFMTrainer_DrasCLRTiny):
    use_pretrained = False

