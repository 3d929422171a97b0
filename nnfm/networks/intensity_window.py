"""Map nnU-Net-normalised intensities into the [0, 1] range an encoder was pretrained on.

nnU-Net looks normalisation schemes up by name inside its own package only, so a plugin cannot
add one without patching nnU-Net. Instead nnU-Net's own normalisation (z-score / CT) runs as
usual, and this fixed layer clips each channel to a window measured by the nnFM planner (the
0.5 / 99.5 foreground percentiles, in normalised units) and scales it to [0, 1]. It lives in the
network, so training, validation and ``nnUNetv2_predict`` all apply it identically.

Masked normalisation (``use_mask_for_norm``, e.g. skull-stripped brain MRI): nnU-Net z-scores only the
voxels inside the nonzero mask and leaves the voxels outside at exactly 0 (nnunetv2
preprocessing/normalization/default_normalization_schemes.py, ZScoreNormalization); its training loader
(acvl_utils ``crop_and_pad_nd``) and its sliding-window predictor (``pad_nd_image(..., 'constant',
{'value': 0})``) pad data with 0 as well. In z-score units 0 is the foreground mean, so a plain window
would show air to the encoder as mid-grey tissue (0.503 for anatomix on brain MRI, issue 11). anatomix
min-max scales each volume, whose minimum is that background, so its background is 0: for the channels
flagged in ``zero_is_background`` (the plans' ``use_mask_for_norm``) a voxel exactly equal to 0 maps to
0. Inside the mask an exact 0 needs a voxel exactly at the float mean: measure-zero, and it would land at
the window's middle grey anyway, not at a different tissue.
"""
from typing import Optional, Sequence

import torch
from torch import nn

# z-score units; used when the plans carry no measured window (e.g. plain nnUNetPlans)
DEFAULT_WINDOW = (-3.0, 3.0)


class IntensityWindow(nn.Module):
    """(B, C, *spatial) nnU-Net-normalised intensities -> the same shape in [0, 1].

    window: per channel [lower, upper] in nnU-Net's normalised units (``DEFAULT_WINDOW`` when None).
    zero_is_background: per channel, whether nnU-Net normalised it inside the nonzero mask (its voxels equal
    to 0 are outside the mask or padding and map to 0); None = no channel (plans written before issue 11).
    Raises ValueError for a window or flag list whose length is not ``num_channels`` or with upper <= lower.
    """

    def __init__(self, num_channels: int, window: Optional[Sequence[Sequence[float]]] = None, ndim: int = 3,
                 zero_is_background: Optional[Sequence[bool]] = None):
        super().__init__()
        flags = [False] * num_channels if zero_is_background is None else [bool(f) for f in zero_is_background]
        if len(flags) != num_channels:
            raise ValueError(f"zero_is_background has {len(flags)} entries but the data has {num_channels} "
                             f"channels; re-run nnFM_plan_and_preprocess -d ID -e ENCODER for this dataset.")
        if window is None:
            window = [DEFAULT_WINDOW] * num_channels
        if len(window) != num_channels:
            raise ValueError(f"input_window has {len(window)} entries but the data has {num_channels} channels; "
                             f"re-run nnFM_plan_and_preprocess -d ID -e ENCODER for this dataset.")
        # checked on the plain numbers, so that the network also builds on the meta device (planning)
        if any(float(w[1]) <= float(w[0]) for w in window):
            raise ValueError(f"input_window needs lower < upper for every channel, got {window}")
        lower = torch.tensor([float(w[0]) for w in window])
        upper = torch.tensor([float(w[1]) for w in window])
        shape = (1, num_channels) + (1,) * ndim  # ndim spatial axes (3 for 3D networks, 2 for 2D)
        # not persistent: the window comes from the plans, not from checkpoints
        self.register_buffer("lower", lower.view(shape), persistent=False)
        self.register_buffer("upper", upper.view(shape), persistent=False)
        self.masks_background = any(flags)
        self.register_buffer("zero_is_background", torch.tensor(flags).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lower, upper = self.lower.to(x.dtype), self.upper.to(x.dtype)
        scaled = (x.clamp(lower, upper) - lower) / (upper - lower)
        if self.masks_background:
            # outside nnU-Net's nonzero mask (and its zero padding) -> the encoder's background, 0
            scaled = scaled.masked_fill(self.zero_is_background & (x == 0), 0.0)
        return scaled
