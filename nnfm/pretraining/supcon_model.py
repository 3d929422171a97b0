"""AnatomixUNet + per-tap projection heads + the voxel SupCon objective, as one module.

One module so that DDP sees every trainable parameter in a single forward. Only ``encoder`` is
exported as pretrained weights; the heads exist for the pretext task.

Taps are indices into the U-Net's flat ``model`` Sequential (the published layer order, see
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

from nnfm.networks.anatomix_unet import AnatomixUNet
from nnfm.pretraining.supcon import gather_voxels, sample_uniform_indices, sample_voxel_indices, supcon_loss
from nnfm.pretraining.supcon_heads import HEADS

ANATOMIX_TAPS = (27, 31, 38, 45, 52, 65)
SAMPLINGS = ("uniform", "balanced")


@dataclass
class SupConSettings:
    taps: Tuple[int, ...] = ANATOMIX_TAPS
    voxels_per_layer: int = 512      # anatomix --num_patches 512: positions per sample and tap (2 anchors each)
    head_dim: int = 256              # anatomix --netF_nc 256
    temperature: float = 0.33        # anatomix --nce_T 0.33
    sampling: str = "uniform"        # anatomix: uniform without replacement; "balanced": nnFM's earlier sampler
    head: str = "anatomix"           # anatomix: 3-layer MLP with batch norm; "plain": nnFM's earlier 2-layer MLP


def tap_channels(encoder: AnatomixUNet, tap: int) -> int:
    """Channels of layer ``tap``'s output; ValueError for a layer index out of range or a pooling layer."""
    if not 0 <= tap < len(encoder.model):
        raise ValueError(f"tap {tap} is not a layer of the U-Net (0..{len(encoder.model) - 1})")
    for layer in reversed(list(encoder.model)[:tap + 1]):   # norm/ReLU keep the channels of the conv before
        if isinstance(layer, nn.Conv3d):
            if tap in encoder.upsample_at:
                raise ValueError(f"tap {tap} is an upsampling layer; tap a convolution, norm or ReLU")
            return layer.out_channels
        if isinstance(layer, (nn.MaxPool3d, nn.Upsample)):
            raise ValueError(f"tap {tap} is a pooling/upsampling layer; tap a convolution, norm or ReLU")
    raise ValueError(f"tap {tap} has no convolution before it")


def tapped_features(encoder: AnatomixUNet, x: torch.Tensor, taps: Tuple[int, ...]) -> Dict[int, torch.Tensor]:
    """Outputs of the layers ``taps`` for input ``x`` (N, C, Z, Y, X), as anatomix's ``Unet.forward(x, layers)``.

    A tapped conv output is safe from the in-place ReLUs (they act on the batch norm's new tensor);
    any other tapped output is cloned, so a following in-place ReLU cannot change it.
    """
    wanted, found, skips = set(taps), {}, []
    for index, layer in enumerate(encoder.model):
        x = layer(x)
        if index in encoder.upsample_at:
            x = torch.cat((skips.pop(), x), dim=1)
        elif index in encoder.skip_after:
            skips.append(x)
        if index in wanted:
            found[index] = x if isinstance(layer, nn.Conv3d) else x.clone()
        if len(found) == len(wanted):
            break                      # nothing after the last tap contributes to the loss
    return found


class SupConPretrainingModel(nn.Module):
    def __init__(self, encoder: AnatomixUNet = None, settings: SupConSettings = None):
        super().__init__()
        self.encoder = encoder or AnatomixUNet()
        self.settings = settings or SupConSettings()
        if self.settings.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.settings.sampling!r}")
        if self.settings.head not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)}, got {self.settings.head!r}")
        head = HEADS[self.settings.head]
        self.taps = tuple(int(t) for t in self.settings.taps)
        self.heads = nn.ModuleDict({str(t): head(tap_channels(self.encoder, t), self.settings.head_dim)
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
        features = tapped_features(self.encoder, torch.cat([view1, view2]), self.taps)
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
            projected = self.heads[str(tap)](rows).reshape(batch, voxels.shape[1], -1)
            losses[str(tap)] = supcon_loss(projected, voxel_labels, self.settings.temperature)
        total = torch.stack(list(losses.values())).mean()
        return total, {k: v.detach() for k, v in losses.items()}
