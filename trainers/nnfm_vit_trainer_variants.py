"""2D ViT trainers (MedDINOv3 path): one class per encoder and initialisation.

- ``nnFMTrainer_MedDINOv3``: MedDINOv3 ViT-B/16 (CT-3M) weights by default, encoder lr 3e-5.
- ``nnFMTrainer_DINOv3_B`` / ``nnFMTrainer_DINOv3_S``: official DINOv3 ViT-B/16 / ViT-S/16 (LVD-1689M), encoder lr 1e-4.
- ``..._scratch``: the same network and schedule, random initialisation (encoder lr = decoder lr).
Short budgets: ``nnFM_EPOCHS=N`` (nnU-Net's default is 1000 epochs).
The plans (``nnFM_plan_and_preprocess -e meddinov3_vitb16 | dinov3_vitb16 | dinov3_vits16``) say
which ViT is built; ``nnFM_WEIGHTS`` / the plans' weights override the trainer's default weights.
"""
from nnfm_trainers.nnfm_vit_trainer import nnFMViTTrainer


class nnFMTrainer_MedDINOv3(nnFMViTTrainer):
    encoder = "meddinov3_vitb16"


class nnFMTrainer_DINOv3_B(nnFMViTTrainer):
    encoder = "dinov3_vitb16"


class nnFMTrainer_DINOv3_S(nnFMViTTrainer):
    encoder = "dinov3_vits16"


class nnFMTrainer_MedDINOv3_scratch(nnFMTrainer_MedDINOv3):
    use_pretrained = False


class nnFMTrainer_DINOv3_B_scratch(nnFMTrainer_DINOv3_B):
    use_pretrained = False


class nnFMTrainer_DINOv3_S_scratch(nnFMTrainer_DINOv3_S):
    use_pretrained = False

