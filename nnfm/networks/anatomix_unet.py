"""The anatomix 3D U-Net, built so that its state_dict matches the published ``anatomix.pth``.

The published network is one flat ``nn.Sequential`` called ``model``; skip connections are
taken after the last activation of each encoder level and concatenated *before* the upsampled
features (``cat(skip, up)``). We rebuild exactly that layer order so the checkpoint loads with
strict key and shape checks, and add a forward that also returns the decoder level outputs
(needed for deep supervision).
"""
from typing import List, Tuple

import torch
from torch import nn

_NORMS = {
    "batch": lambda c: nn.BatchNorm3d(c, eps=1e-5),
    "instance": lambda c: nn.InstanceNorm3d(c, eps=1e-5, affine=True),
}


class AnatomixUNet(nn.Module):
    """anatomix ``Unet(dimension=3, num_downs, ngf, norm)`` with reflect padding and ReLU.

    Output: ``out_channels`` dense features at input resolution (16 for the published weights).
    Spatial sizes must be divisible by ``2 ** num_downs``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 16, num_downs: int = 4, ngf: int = 16,
                 norm: str = "batch"):
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}")
        self.num_downs = num_downs
        # bias only without batch norm, exactly as the published network
        bias = norm != "batch"
        make_norm = _NORMS[norm]
        layers: List[nn.Module] = []
        self.skip_after: List[int] = []      # layer index whose output is kept as a skip
        self.upsample_at: List[int] = []     # layer index of each nn.Upsample
        self.level_end: List[int] = []       # last layer of each decoder level (deep supervision taps)

        def conv_block(cin: int, cout: int) -> None:
            layers.append(nn.Conv3d(cin, cout, 3, padding="same", padding_mode="reflect", bias=bias))
            layers.append(make_norm(cout))
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
            layers.append(nn.MaxPool3d(2))
            channels = out
        conv_block(channels, channels * 2)
        conv_block(channels * 2, channels * 2)
        self.decoder_channels = []
        mult = 2 ** num_downs
        for _ in range(num_downs):
            self.upsample_at.append(len(layers))
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
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
