"""anatomix-dev U-Net trainers (registry entries in nnfm/networks/anatomix_dev_unet.py).

- ``nnFMTrainer_anatomixDev``: the anatomix-dev preset with the published ``anatomix-dev.pth`` by default.
- ``nnFMTrainer_anatomixDev_scratch``: the same network and recipe, random initialisation.
- ``nnFMTrainer_anatomixDevTiny`` (+ ``_scratch``): the dev topology at ngf 4 for CPU runs and tests
  (random unless ``nnFM_WEIGHTS`` names a checkpoint of that size).
- Short budgets: ``nnFM_EPOCHS`` / ``nnFM_ITERATIONS`` (as for every nnFM trainer).

Everything else is nnFMTrainer's: network built from the plans' arch_kwargs (the registry preset for plans
of nnU-Net's own networks), strict encoder load, and the anatomix authors' fine-tuning recipe, which their
train_segmentation.py also applies to ``--hf_variant anatomix-dev``.
"""
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMTrainer_anatomixDev(nnFMTrainer):
    encoder = "anatomix_dev_unet"


class nnFMTrainer_anatomixDev_scratch(nnFMTrainer_anatomixDev):
    use_pretrained = False


class nnFMTrainer_anatomixDevTiny(nnFMTrainer_anatomixDev):
    encoder = "anatomix_dev_unet_tiny"


class nnFMTrainer_anatomixDevTiny_scratch(nnFMTrainer_anatomixDevTiny):
    use_pretrained = False
