"""AnatomixUNet + per-layer projection heads + the voxel SupCon objective, as one module.

One module so that DDP sees every trainable parameter in a single forward. Only ``encoder`` is
exported as pretrained weights; the heads exist for the pretext task.
"""
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import nn

from nnfm.networks.anatomix_unet import AnatomixUNet
from nnfm.pretraining.supcon import gather_voxels, sample_voxel_indices, supcon_loss

# tap name -> (downsampling factor, which output). "out" = 16-ch dense output; "decN" = decoder
# level at 1/N resolution (dec1 = 16 ch before the final conv, dec2 = 32, dec4 = 64, dec8 = 128 ch)
TAPS = {"out": 1, "dec1": 1, "dec2": 2, "dec4": 4, "dec8": 8}
DEFAULT_TAPS = ("out", "dec2", "dec4")


@dataclass
class SupConSettings:
    taps: Tuple[str, ...] = DEFAULT_TAPS
    voxels_per_layer: int = 512      # positions per sample and layer (each gives 2 anchors: one per view)
    head_dim: int = 256
    temperature: float = 0.33
    balanced_sampling: bool = True


class ProjectionHead(nn.Module):
    """Voxel-wise MLP applied to sampled feature vectors (cheaper than 1x1x1 convs on whole volumes)."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def tap_channels(encoder: AnatomixUNet, tap: str) -> int:
    if tap == "out":
        return encoder.out_channels
    levels = {2 ** (len(encoder.decoder_channels) - 1 - i): c for i, c in enumerate(encoder.decoder_channels)}
    return levels[TAPS[tap]]


class SupConPretrainingModel(nn.Module):
    def __init__(self, encoder: AnatomixUNet = None, settings: SupConSettings = None):
        super().__init__()
        self.encoder = encoder or AnatomixUNet()
        self.settings = settings or SupConSettings()
        unknown = [t for t in self.settings.taps if t not in TAPS]
        if unknown:
            raise ValueError(f"unknown taps {unknown}; choose from {sorted(TAPS)}")
        self.heads = nn.ModuleDict({t: ProjectionHead(tap_channels(self.encoder, t), self.settings.head_dim)
                                    for t in self.settings.taps})

    def _tap_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        dense, levels = self.encoder.forward_with_levels(x)
        by_factor = {2 ** (len(levels) - 1 - i): f for i, f in enumerate(levels)}
        return {t: dense if t == "out" else by_factor[TAPS[t]] for t in self.settings.taps}

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Mean SupCon loss over taps, and the per-tap losses (detached)."""
        batch = view1.shape[0]
        features = self._tap_features(torch.cat([view1, view2]))
        losses: Dict[str, torch.Tensor] = {}
        for tap, feature in features.items():
            factor = TAPS[tap]
            # label of the voxel nearest each coarse voxel's centre
            level_labels = labels[:, factor // 2::factor, factor // 2::factor, factor // 2::factor]
            # sampled on the CPU with a CPU generator: identical positions on any device
            index = sample_voxel_indices(level_labels.cpu(), self.settings.voxels_per_layer, generator,
                                         self.settings.balanced_sampling).to(feature.device)
            f1, f2 = feature[:batch], feature[batch:]
            # same positions in both views: voxel i of view 1 and of view 2 are positives by construction
            voxels = torch.cat([gather_voxels(f1, index), gather_voxels(f2, index)], dim=1)
            voxel_labels = level_labels.reshape(batch, -1).gather(1, index).repeat(1, 2)
            projected = self.heads[tap](voxels.float())
            losses[tap] = supcon_loss(projected, voxel_labels, self.settings.temperature)
        total = torch.stack(list(losses.values())).mean()
        return total, {k: v.detach() for k, v in losses.items()}
