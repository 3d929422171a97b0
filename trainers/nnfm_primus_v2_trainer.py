"""PrimusV2 / PrimusV3 trainers (dynamic-network-architectures' iterative tokenizers + Eva + multi-scale decoder).

- ``nnFMTrainer_AnatomixDevViT``: anatomix-dev-vit (PrimusV2-S, 8 register tokens, QK-norm) with the published
  ``anatomix-dev-vit`` weights by default; ``nnFMTrainer_AnatomixDevViT_scratch``: the same, random init.
- ``nnFMTrainer_PrimusV2{S,B,M,L}`` / ``nnFMTrainer_PrimusV3{S,B,M,L}``: nnU-Net's PrimusV2 / V3 sizes
  (nnunetv2 primus_trainers.py ``nnUNet_PrimusV2S_Trainer`` ...; nnU-Net's documentation/primus.md recommends
  PrimusV3-S) with multi-scale token aggregation; no published weights, so random init (``nnFM_WEIGHTS`` may
  name a ``primus_v2``-family file, e.g. an nnU-Net PrimusV2/V3 checkpoint of the same size).
- ``nnFMTrainer_AnatomixDevViTTiny`` (+ ``_scratch``): the anatomix-dev-vit architecture at test size (CPU).
- Short budgets: ``nnFM_EPOCHS`` / ``nnFM_ITERATIONS`` (as for every nnFM trainer).

The recipe is nnU-Net's Primus recipe as ``nnFMViTTrainer`` implements it (AdamW (0.9, 0.98), lr 3e-4, weight decay
0.05, linear warm-up over 5% of the epochs then poly, gradient clipping 1, no deep supervision; nnunetv2
primus_trainers.py ``AbstractPrimus``: 50 warm-up epochs of 1000); the encoder lr with pretrained ``primus_v2``
weights is 1e-4 (as for nnssl's Primus-M; anatomix publishes no ViT fine-tuning recipe).
"""
from nnfm.networks.primus_v2_segmentation import PrimusV2SegmentationNetwork
from nnfm_trainers.nnfm_primus_trainer import nnFMTrainer_Primus


class nnFMTrainer_PrimusV2Base(nnFMTrainer_Primus):
    """Builds the registry's ``encoder`` (a PrimusV2SegmentationNetwork preset) from the plans or the preset."""
    network_class = PrimusV2SegmentationNetwork
    encoder = "anatomix_dev_vit"
    # pretrained PrimusV2 features fine-tune 3x slower than the new decoder (not chosen by measurement: the weights
    # cannot be downloaded here); random init learns at the decoder's rate, as nnU-Net's Primus trainers
    encoder_lr_by_family = {"primus_v2": 1e-4, None: 3e-4}


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
