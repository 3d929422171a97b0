"""Synthetic volume engine: random label ensembles rendered twice with different appearances.

The two views share geometry (one label map, one spatial transform) and differ only in
appearance, which is what voxel-level contrastive pretraining needs (anatomix, Dey et al. 2025).
"""
from nnfm.pretraining.synth.engine import SynthConfig, SyntheticPairDataset, SyntheticPairGenerator

__all__ = ["SynthConfig", "SyntheticPairDataset", "SyntheticPairGenerator"]
