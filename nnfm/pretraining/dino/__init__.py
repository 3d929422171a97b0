"""DINOv3-style domain-adaptive self-supervised pretraining of a timm DINOv3 ViT on nnU-Net data.

Stage 1: DINO (CLS, Sinkhorn-Knopp centring) + iBOT (masked patches) + KoLeo, EMA teacher, multi-crop.
Stage 2: stage 1 + Gram anchoring against a frozen earlier teacher. Stage 3: stage 2 at a higher
resolution. The result is exported in the MedDINOv3 layout (``{'teacher': {'backbone.*', ...}}``).
"""
