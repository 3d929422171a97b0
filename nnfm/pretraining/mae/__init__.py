"""Masked-image reconstruction (MAE-style) pretraining of the anatomix U-Net on an nnU-Net preprocessed dataset.

As nnssl's CNN MAE (MIC-DKFZ/nnssl, ``BaseMAETrainer``): 75 % of 16^3 blocks of each patch are zeroed,
a dense U-Net reconstructs the patch, MSE only on masked voxels. Labels are never opened. The U-Net
is exported in the anatomix layout (``anatomix_mae.pth``, 115 keys).
"""
