"""The anatomix 3D U-Net, built so that its state_dict matches the authors' published files.

The authors' network (neel-dey/anatomix, anatomix/model/network.py ``Unet``) is one flat ``nn.Sequential``
called ``model``; skip connections are taken after the last activation of each encoder level and
concatenated *before* the upsampled features (``cat(skip, up)``). We rebuild exactly that layer order so
the published checkpoints load with strict key and shape checks, and add a forward that also returns the
decoder level outputs (needed for deep supervision).

One class, two published presets (the kwargs of ``ANATOMIX_VARIANTS`` in anatomix/model/load_from_hf.py):

- ``anatomix.pth``: ``num_downs=4, ngf=16, out_channels=16``, batch norm, max pooling, nearest upsampling
  (the class defaults);
- ``anatomix-dev.pth``: ``num_downs=5, ngf=32, out_channels=32, norm="instance", norm_eps=1e-2,
  pooling="Avg", interp="trilinear"`` (:data:`ANATOMIX_DEV_PRESET`).
"""
from typing import List, Tuple

import torch
from torch import nn

# the authors' names (anatomix/model/network.py, get_norm_layer): "instance" has no affine parameters
# (nor running statistics), "instance_affine" learns a per-channel scale and shift
NORMS = ("batch", "instance", "instance_affine", "none")
POOLINGS = ("Max", "Avg")
INTERPOLATIONS = ("nearest", "trilinear")

# ANATOMIX_VARIANTS["anatomix-dev"]["unet_kwargs"] (anatomix/model/load_from_hf.py), in this class's names
ANATOMIX_DEV_PRESET = {"num_downs": 5, "ngf": 32, "out_channels": 32, "norm": "instance", "norm_eps": 1e-2,
                       "pooling": "Avg", "interp": "trilinear"}


def _norm_layer(norm: str, channels: int, eps: float) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm3d(channels, eps=eps)
    # track_running_stats stays False as in the authors' get_norm_layer: no buffers in the state_dict
    return nn.InstanceNorm3d(channels, eps=eps, affine=norm == "instance_affine")


class AnatomixUNet(nn.Module):
    """anatomix ``Unet(dimension=3, input_nc, output_nc, num_downs, ngf, norm, pooling, interp, norm_eps)``
    with reflect padding, ReLU and double convolutions (the authors' defaults).

    Input (B, in_channels, X, Y, Z), every spatial size divisible by ``2 ** num_downs`` and at least
    ``2 ** (num_downs + 1)`` (reflect padding needs 2 voxels per axis at the bottleneck). Output: the
    ``out_channels`` dense features at input resolution (16 for anatomix.pth, 32 for anatomix-dev.pth).

    ``norm``: one of :data:`NORMS` (the authors' names; convolutions have a bias only with ``"instance"``,
    as in the authors' ``use_bias = norm == 'instance'``); ``norm_eps``: the norm layers' epsilon;
    ``pooling``: ``"Max"`` or ``"Avg"`` (``nn.MaxPool3d(2)`` / ``nn.AvgPool3d(2)``); ``interp``: the decoder's
    ``nn.Upsample(scale_factor=2)`` mode. Raises ValueError for other values.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 16, num_downs: int = 4, ngf: int = 16,
                 norm: str = "batch", *, norm_eps: float = 1e-5, pooling: str = "Max", interp: str = "nearest"):
        super().__init__()
        for name, value, allowed in (("norm", norm, NORMS), ("pooling", pooling, POOLINGS),
                                     ("interp", interp, INTERPOLATIONS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)} (anatomix/model/network.py), got {value!r}")
        self.num_downs = num_downs
        self.norm, self.norm_eps, self.pooling, self.interp = norm, norm_eps, pooling, interp
        bias = norm == "instance"
        pool = nn.MaxPool3d if pooling == "Max" else nn.AvgPool3d
        layers: List[nn.Module] = []
        self.skip_after: List[int] = []      # layer index whose output is kept as a skip
        self.upsample_at: List[int] = []     # layer index of each nn.Upsample
        self.level_end: List[int] = []       # last layer of each decoder level (deep supervision taps)

        def conv_block(cin: int, cout: int) -> None:
            layers.append(nn.Conv3d(cin, cout, 3, padding="same", padding_mode="reflect", bias=bias))
            if norm != "none":
                layers.append(_norm_layer(norm, cout, norm_eps))
            layers.append(nn.ReLU(inplace=True))

        conv_block(in_channels, ngf)
        channels = ngf
        self.encoder_channels = []
        for level in range(num_downs):
            out = channels if level == 0 else channels * 2
            conv_block(channels, out)
            conv_block(out, out)
            self.skip_after.append(len(layers) - 1)
            self.encoder_channels.append(out)
            layers.append(pool(2))
            channels = out
        conv_block(channels, channels * 2)
        conv_block(channels * 2, channels * 2)
        self.decoder_channels = []
        mult = 2 ** num_downs
        for _ in range(num_downs):
            self.upsample_at.append(len(layers))
            layers.append(nn.Upsample(scale_factor=2, mode=interp))
            conv_block(ngf * (mult + mult // 2), ngf * (mult // 2))
            conv_block(ngf * (mult // 2), ngf * (mult // 2))
            self.level_end.append(len(layers) - 1)
            self.decoder_channels.append(ngf * (mult // 2))
            mult //= 2
        layers.append(nn.Conv3d(ngf, out_channels, 3, padding="same", padding_mode="reflect", bias=bias))
        self.model = nn.Sequential(*layers)
        self.out_channels = out_channels

    @property
    def stem(self) -> nn.Conv3d:
        return self.model[0]

    def forward_with_levels(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Return the dense output and the decoder level outputs, coarsest first."""
        skips, levels = [], []
        for index, layer in enumerate(self.model):
            x = layer(x)
            if index in self.upsample_at:
                x = torch.cat((skips.pop(), x), dim=1)
            elif index in self.skip_after:
                skips.append(x)
            elif index in self.level_end:
                levels.append(x)
        return x, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_levels(x)[0]
