"""PrimusV2 / PrimusV3 trainers (dynamic-network-architectures' iterative tokenizers + Eva + multi-scale decoder).

- ``nnFMTrainer_AnatomixDevViT``: anatomix-dev-vit (PrimusV2-S, 8 register tokens, QK-norm) with the published
  ``anatomix-dev-vit`` weights by default; ``nnFMTrainer_AnatomixDevViT_scratch``: the same, random init.
- ``nnFMTrainer_PrimusV2{S,B,M,L}`` / ``nnFMTrainer_PrimusV3{S,B,M,L}``: nnU-Net's PrimusV2 / V3 sizes
  (nnunetv2 primus_trainers.py ``nnUNet_PrimusV2S_Trainer`` ...; nnU-Net's documentation/primus.md recommends
  PrimusV3-S) with multi-scale token aggregation; no published weights, so random init (``nnFM_WEIGHTS`` may
  name a ``primus_v2``-family file, e.g. an nnU-Net PrimusV2/V3 checkpoint of the same size).
- ``nnFMTrainer_AnatomixDevViTTiny`` (+ ``_scratch``): the anatomix-dev-vit architecture at test size (CPU).
- ``..._{1,5,10,20,50,100,250}epoch(s)``: short budgets.

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


_BASES = [nnFMTrainer_AnatomixDevViT, nnFMTrainer_AnatomixDevViT_scratch, nnFMTrainer_AnatomixDevViTTiny,
          nnFMTrainer_AnatomixDevViTTiny_scratch]
for _version in ("V2", "V3"):
    for _size in "SBML":
        _cls = type(f"nnFMTrainer_Primus{_version}{_size}", (nnFMTrainer_PrimusV2Base,),
                    {"encoder": f"primus_{_version.lower()}_{_size.lower()}", "__module__": __name__,
                     "__doc__": f"Primus{_version}-{_size}: nnU-Net's nnUNet_Primus{_version}{_size}_Trainer network "
                                f"size with multi-scale token aggregation, random init."})
        globals()[_cls.__name__] = _cls
        _BASES.append(_cls)
del _cls, _version, _size
