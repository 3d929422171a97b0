"""Projection heads of the voxel SupCon objective, and anatomix's weight initialisation.

Source of every value: neel-dey/anatomix, ``pretraining/models/pretraining_networks.py``
(``PatchSampleF.create_mlp``, ``init_weights``) with the options of
``pretraining/scripts/pretrain_anatomix.py`` (``--n_mlps 3``, ``--netF_nc 256``, ``--normF batch``,
``--init_type kaiming``).
"""
import torch
from torch import nn


class AnatomixProjectionHead(nn.Module):
    """anatomix's 3-layer head: (Linear, BatchNorm1d, ReLU) x 2, Linear, BatchNorm1d(affine=False).

    Linear layers have no bias (batch norm follows each). Input (M, C) sampled voxel features,
    output (M, dim). The batch-norm statistics are taken over all M rows, i.e. over every sampled
    voxel of both views (and, in nnFM, of every sample in the batch), as anatomix flattens
    ``(n_views * n_samples, C)`` before its MLP.
    """

    def __init__(self, in_channels: int, dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class PlainProjectionHead(nn.Module):
    """nnFM's earlier head (``--head plain``): Linear, ReLU, Linear, with biases and no batch norm."""

    def __init__(self, in_channels: int, dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


HEADS = {"anatomix": AnatomixProjectionHead, "plain": PlainProjectionHead}


def anatomix_init_(module: nn.Module) -> nn.Module:
    """anatomix's ``init_weights(net, "kaiming")``, in place.

    Conv/Linear weights: ``kaiming_normal_(a=0, mode="fan_in")``, biases 0; BatchNorm2d/3d weights
    N(1, 0.02) (``init_gain`` 0.02), biases 0. BatchNorm1d is left at torch's default (1, 0): anatomix's
    class-name test only matches ``BatchNorm2d``/``BatchNorm3d``.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
