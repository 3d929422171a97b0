"""Map nnU-Net-normalised intensities into the [0, 1] range an encoder was pretrained on.

nnU-Net looks normalisation schemes up by name inside its own package only, so a plugin cannot
add one without patching nnU-Net. Instead nnU-Net's own normalisation (z-score / CT) runs as
usual, and this fixed layer clips each channel to a window measured by the nnFM planner (the
0.5 / 99.5 foreground percentiles, in normalised units) and scales it to [0, 1]. It lives in the
network, so training, validation and ``nnUNetv2_predict`` all apply it identically.
"""
from typing import Optional, Sequence

import torch
from torch import nn

# z-score units; used when the plans carry no measured window (e.g. plain nnUNetPlans)
DEFAULT_WINDOW = (-3.0, 3.0)


class IntensityWindow(nn.Module):
    def __init__(self, num_channels: int, window: Optional[Sequence[Sequence[float]]] = None, ndim: int = 3):
        super().__init__()
        if window is None:
            window = [DEFAULT_WINDOW] * num_channels
        if len(window) != num_channels:
            raise ValueError(f"input_window has {len(window)} entries but the data has {num_channels} channels; "
                             f"re-run nnFM_plan_and_preprocess for this dataset.")
        lower = torch.tensor([float(w[0]) for w in window])
        upper = torch.tensor([float(w[1]) for w in window])
        if torch.any(upper <= lower):
            raise ValueError(f"input_window needs lower < upper for every channel, got {window}")
        shape = (1, num_channels) + (1,) * ndim  # ndim spatial axes (3 for 3D networks, 2 for 2D)
        # not persistent: the window comes from the plans, not from checkpoints
        self.register_buffer("lower", lower.view(shape), persistent=False)
        self.register_buffer("upper", upper.view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lower, upper = self.lower.to(x.dtype), self.upper.to(x.dtype)
        return ((x.clamp(lower, upper) - lower) / (upper - lower))
