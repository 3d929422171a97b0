"""A tapped network + per-tap projection heads + the voxel SupCon objective, as one module.

One module so that DDP sees every trainable parameter in a single forward. Only ``encoder`` (the tapped
network: the anatomix U-Net, or any registered encoder's network, nnfm/pretraining/taps.py) is exported as
pretrained weights; the heads exist for the pretext task.

For the anatomix U-Net, taps are indices into the U-Net's flat ``model`` Sequential (the published layer order, see
``nnfm/networks/anatomix_unet.py``); a tap's feature is the output of that layer. Defaults follow
neel-dey/anatomix, ``pretraining/scripts/pretrain_anatomix.py`` (``--nce_layers 27,31,38,45,52,65``):
six convolution outputs, taken *before* their batch norm and ReLU:

    27: encoder level 4, 2nd conv  (128 ch, 1/8)     38: decoder 1/8, 1st conv (128 ch)
    31: bottleneck, 1st conv       (256 ch, 1/16)    45: decoder 1/4, 1st conv (64 ch)
    52: decoder 1/2, 1st conv      (32 ch)           65: final conv            (16 ch, 1/1)

nnFM's earlier taps were the ReLU outputs 65 (= final conv), 57 (decoder 1/2) and 50 (decoder 1/4).
"""
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import nn

from nnfm.pretraining.supcon import gather_voxels, sample_uniform_indices, sample_voxel_indices, supcon_loss
from nnfm.pretraining.supcon_heads import HEADS
from nnfm.pretraining.taps import ANATOMIX_TAPS, AnatomixTaps, ModuleTaps, Tap, tap_channels, tapped_features  # noqa: F401

SAMPLINGS = ("uniform", "balanced")


@dataclass
class SupConSettings:
    taps: Tuple[Tap, ...] = ANATOMIX_TAPS  # module names for a registered encoder's network (taps.py)
    voxels_per_layer: int = 512      # anatomix --num_patches 512: positions per sample and tap (2 anchors each)
    head_dim: int = 256              # anatomix --netF_nc 256
    temperature: float = 0.33        # anatomix --nce_T 0.33
    sampling: str = "uniform"        # anatomix: uniform without replacement; "balanced": nnFM's earlier sampler
    head: str = "anatomix"           # anatomix: 3-layer MLP with batch norm; "plain": nnFM's earlier 2-layer MLP


def head_key(tap: Tap) -> str:
    """ModuleDict key of a tap's head ("27"; "decoder-stages-3" for a module name: keys cannot hold dots)."""
    return str(tap).replace(".", "-")


class SupConPretrainingModel(nn.Module):
    """``tapper``: an AnatomixTaps (the default, the anatomix U-Net) or ModuleTaps (nnfm/pretraining/taps.py)."""

    def __init__(self, encoder: nn.Module = None, settings: SupConSettings = None, tapper=None):
        super().__init__()
        self.tapper = tapper or AnatomixTaps(encoder)
        self.encoder = self.tapper.network
        self.settings = settings or SupConSettings()
        if self.settings.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.settings.sampling!r}")
        if self.settings.head not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)}, got {self.settings.head!r}")
        head = HEADS[self.settings.head]
        self.taps = tuple(int(t) if isinstance(self.tapper, AnatomixTaps) else str(t) for t in self.settings.taps)
        self.heads = nn.ModuleDict({head_key(t): head(self.tapper.channels(t), self.settings.head_dim)
                                    for t in self.taps})

    def _indices(self, level_labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, size = level_labels.shape[0], level_labels[0].numel()
        if self.settings.sampling == "uniform":
            return sample_uniform_indices(batch, size, self.settings.voxels_per_layer, generator)
        return sample_voxel_indices(level_labels, self.settings.voxels_per_layer, generator, balanced=True)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """view1/view2 (B, 1, Z, Y, X), labels (B, Z, Y, X) -> mean SupCon loss over taps, per-tap losses (detached).

        anatomix averages its per-layer losses with equal weights (``--nce_weights 1,1,1,1,1,1``).
        """
        batch = view1.shape[0]
        features = self.tapper.features(torch.cat([view1, view2]), self.taps)
        losses: Dict[str, torch.Tensor] = {}
        for tap in self.taps:
            feature = features[tap]
            factor = labels.shape[-1] // feature.shape[-1]
            # anatomix: F.interpolate(labels, feature size, mode="nearest") = every factor-th voxel from 0
            level_labels = labels[:, ::factor, ::factor, ::factor]
            # drawn on the CPU with a CPU generator: identical positions on any device
            index = self._indices(level_labels.cpu(), generator).to(feature.device)
            # same positions in both views: voxel i of view 1 and of view 2 are positives by construction
            voxels = torch.cat([gather_voxels(feature[:batch], index), gather_voxels(feature[batch:], index)], dim=1)
            voxel_labels = level_labels.reshape(batch, -1).gather(1, index).repeat(1, 2)
            rows = voxels.reshape(-1, voxels.shape[-1]).float()   # (B * 2N, C): one batch-norm batch, as anatomix
            projected = self.heads[head_key(tap)](rows).reshape(batch, voxels.shape[1], -1)
            losses[head_key(tap)] = supcon_loss(projected, voxel_labels, self.settings.temperature)
        total = torch.stack(list(losses.values())).mean()
        return total, {k: v.detach() for k, v in losses.items()}
