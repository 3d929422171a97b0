"""PrimusV2 / PrimusV3 trainers (dynamic-network-architectures' iterative tokenizers + Eva + multi-scale decoder).

- ``nnFMTrainer_AnatomixDevViT``: anatomix-dev-vit (PrimusV2-S, 8 register tokens, QK-norm) with the published
  ``anatomix-dev-vit`` weights by default; ``nnFMTrainer_AnatomixDevViT_scratch``: the same, random init.
- ``nnFMTrainer_PrimusV2{S,B,M,L}`` / ``nnFMTrainer_PrimusV3{S,B,M,L}``: nnU-Net's PrimusV2 / V3 sizes
  (nnunetv2 primus_trainers.py ``nnUNet_PrimusV2S_Trainer`` ...; nnU-Net's documentation/primus.md recommends
  PrimusV3-S) with multi-scale token aggregation; no published weights, so random init (``nnFM_WEIGHTS`` may
  name a ``primus_v2``-family file, e.g. an nnU-Net PrimusV2/V3 checkpoint of the same size).
- ``nnFMTrainer_AnatomixDevViTTiny`` (+ ``_scratch``): the anatomix-dev-vit architecture at test size (CPU).
- Short budgets: ``nnFM_EPOCHS`` / ``nnFM_ITERATIONS`` (as for every nnFM trainer).

Recipes (each encoder's registry entry): nnU-Net's Primus recipe for the PrimusV2/V3 sizes, the anatomix authors'
Adam 2e-4 cosine recipe for anatomix-dev-vit (nnfm/networks/primus_v2_segmentation.py names the sources).
"""
from nnfm_trainers.nnfm_primus_trainer import nnFMTrainer_Primus


class nnFMTrainer_PrimusV2Base(nnFMTrainer_Primus):
    """Builds the registry's ``encoder`` (a PrimusV2SegmentationNetwork preset) from the plans or the preset."""
    encoder = "anatomix_dev_vit"


class nnFMTrainer_AnatomixDevViT(nnFMTrainer_PrimusV2Base):
    encoder = "anatomix_dev_vit"


class nnFMTrainer_AnatomixDevViT_scratch(nnFMTrainer_AnatomixDevViT):
    use_pretrained = False


class nnFMTrainer_AnatomixDevViTTiny(nnFMTrainer_PrimusV2Base):
    encoder = "anatomix_dev_vit_tiny"


class nnFMTrainer_AnatomixDevViTTiny_scratch(nnFMTrainer_AnatomixDevViTTiny):
    use_pretrained = False


# nnU-Net's sizes (nnunetv2 primus_trainers.py); random init unless nnFM_WEIGHTS names a primus_v2-family file
class nnFMTrainer_PrimusV2S(nnFMTrainer_PrimusV2Base):
    """PrimusV2-S: the network of nnU-Net's nnUNet_PrimusV2S_Trainer with multi-scale token aggregation."""
    encoder = "primus_v2_s"


class nnFMTrainer_PrimusV2B(nnFMTrainer_PrimusV2Base):
    """PrimusV2-B: the network of nnU-Net's nnUNet_PrimusV2B_Trainer with multi-scale token aggregation."""
    encoder = "primus_v2_b"


class nnFMTrainer_PrimusV2M(nnFMTrainer_PrimusV2Base):
    """PrimusV2-M: the network of nnU-Net's nnUNet_PrimusV2M_Trainer with multi-scale token aggregation."""
    encoder = "primus_v2_m"


class nnFMTrainer_PrimusV2L(nnFMTrainer_PrimusV2Base):
    """PrimusV2-L: the network of nnU-Net's nnUNet_PrimusV2L_Trainer with multi-scale token aggregation."""
    encoder = "primus_v2_l"


class nnFMTrainer_PrimusV3S(nnFMTrainer_PrimusV2Base):
    """PrimusV3-S: the network of nnU-Net's nnUNet_PrimusV3S_Trainer with multi-scale token aggregation."""
    encoder = "primus_v3_s"


class nnFMTrainer_PrimusV3B(nnFMTrainer_PrimusV2Base):
    """PrimusV3-B: the network of nnU-Net's nnUNet_PrimusV3B_Trainer with multi-scale token aggregation."""
    encoder = "primus_v3_b"


class nnFMTrainer_PrimusV3M(nnFMTrainer_PrimusV2Base):
    """PrimusV3-M: the network of nnU-Net's nnUNet_PrimusV3M_Trainer with multi-scale token aggregation."""
    encoder = "primus_v3_m"


class nnFMTrainer_PrimusV3L(nnFMTrainer_PrimusV2Base):
    """PrimusV3-L: the network of nnU-Net's nnUNet_PrimusV3L_Trainer with multi-scale token aggregation."""
    encoder = "primus_v3_l"
