"""Pretraining of nnFM encoders (issue 4): anatomix-style synthetic data + voxel contrastive learning."""
