"""nnFM trainers. nnU-Net finds them through nnUNet_extTrainer (see documentation/setup.md)."""
import os

TRAINERS_DIR = os.path.dirname(os.path.abspath(__file__))
