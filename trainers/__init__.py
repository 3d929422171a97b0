"""nnFM trainers. nnU-Net finds them through nnUNet_extTrainer (README, "Installing into your own environment";
nnFM_doctor checks it)."""
import os

TRAINERS_DIR = os.path.dirname(os.path.abspath(__file__))
