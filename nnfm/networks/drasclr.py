"""DrasCLR's location-conditioned 3D CNN encoder with a U-Net decoder for nnU-Net's ``3d_fullres``.

The encoder is rebuilt from the authors' code (batmanlab/DrasCLR@2d07e07, models/cnn3d.py ``Encoder`` /
``Block`` and models/condconv3d.py ``CondConv3D``) under the same module names, so the query encoder of the
published checkpoint (``module.encoder_q.*`` without the MoCo projection head ``fc``) loads with
``strict=True``. Architecture (cnn3d.py): ELU activations, BatchNorm3d, every convolution a 3x3x3
``CondConv3D``::

    conv1 (1->8, s1) bn1 | conv2 (8->8, s2) bn2 | downsample1..3 = Block(8->16, 16->32, 32->64):
    conv1 (s1) bn1, conv2 (s1) bn2, conv3 (s2) bn3 | conv3 (64->128, s1) bn3 | conv4 (128->rep_dim, s2) bn4

Total stride 32: the authors' 32^3 patches (preprocess/4_patchify_images.py, ``--patch_size 32``) end in one
``rep_dim``-vector, the patch representation ``h``.

Location conditioning (condconv3d.py): each layer holds ``num_experts`` kernels (``weight`` [E, out, in, 3, 3, 3])
and a routing layer ``_routing_fn.fc`` (Linear(3 * num_coordinates, E)); for a patch at location ``loc`` the
kernel is ``sum_e sigmoid(fc(loc))_e * weight[e]``. The authors' ``loc`` is the patch's corner in a lung atlas
after affine registration, in SimpleITK's (x, y, z) index order, normalised per axis as ``loc / max * 2 - 1``
(data/copd_patch.py). nnU-Net hands a network nothing but the image tile (``nnUNetPredictor`` calls
``network(tile)`` on a copy of each sliding-window tile; no position, no atlas), so nnFM takes the location from
the position inside the tile: the tile is divided into 32^3 cells (the pretraining patch) and each cell gets its
centre in tile coordinates normalised to [-1, 1], in DrasCLR's (x, y, z) order (nnU-Net's array axes reversed).
Each layer mixes its experts per cell, which inside a cell is exactly the authors' layer at that location
(convolution is linear in the kernel). A caller that knows anatomical coordinates (e.g. atlas-registered 32^3
patches as in the paper) passes them as ``location`` instead. documentation/drasclr.md has the details.
"""
from types import SimpleNamespace
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from torch import nn

from nnfm.conventions import HU_WINDOW
from nnfm.errors import ConfigurationError
from nnfm.networks.intensity_window import IntensityWindow
from nnfm.networks.stride_padding import check_divisible, crop_to

# the authors' patch size (preprocess/4_patchify_images.py --patch_size 32) = the encoder's total stride
PATCH = 32
# cnn3d.py Encoder: conv1/conv2 width 8, Blocks 16, 32, 64, conv3 128, conv4 rep_dim (run_train.sh --rep-dim 128)
DRASCLR_WIDTHS = (8, 16, 32, 64, 128)


class _Routing(nn.Module):
    """condconv3d.py ``_routing``: location -> sigmoid(Linear) expert weights (its dropout is commented out)."""

    def __init__(self, in_features: int, num_experts: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_experts)

    def forward(self, location: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(location))


class CondConv3d(nn.Module):
    """3x3x3 (padding 1) location-conditioned convolution with the parameters of DrasCLR's ``CondConv3D``.

    ``forward(x, location)``: x (B, in, D, H, W); location (B, 3 * num_coordinates) for one location per sample
    (the authors' case: one mixed kernel per sample), or (B, 3 * num_coordinates, gd, gh, gw) for a grid of
    locations whose cells evenly divide the output (each output voxel uses the kernel of its cell).
    Returns (B, out, ceil(D / stride), ...).
    """

    def __init__(self, in_channels: int, out_channels: int, num_experts: int, num_coordinates: int, stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.num_experts = num_experts
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels, in_channels, 3, 3, 3))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self._routing_fn = _Routing(3 * num_coordinates, num_experts)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He init per expert with a Conv3d's fan-in (nnU-Net's InitWeights_He); published weights replace it
        nn.init.kaiming_normal_(self.weight.view(-1, *self.weight.shape[2:]), a=1e-2)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        if location.dim() > 2 and location[0, 0].numel() == 1:
            location = location.flatten(1)  # a one-cell grid is one location per sample
        routing = self._routing_fn(location.movedim(1, -1) if location.dim() > 2 else location)
        batch = x.shape[0]
        if routing.dim() == 2:  # one kernel per sample, as condconv3d.py; done as one grouped convolution
            kernels = torch.einsum("be,eoi...->boi...", routing, self.weight.to(routing.dtype))
            out = F.conv3d(x.reshape(1, -1, *x.shape[2:]), kernels.reshape(-1, *kernels.shape[2:]).to(x.dtype),
                           self.bias.repeat(batch).to(x.dtype), self.stride, 1, groups=batch)
            return out.view(batch, self.out_channels, *out.shape[2:])
        # a location grid: every expert's response, mixed per voxel with its cell's routing weights (linearity)
        experts = F.conv3d(x, self.weight.reshape(-1, *self.weight.shape[2:]).to(x.dtype), None, self.stride, 1)
        experts = experts.view(batch, self.num_experts, self.out_channels, *experts.shape[2:])
        routing = routing.movedim(-1, 1)  # (B, E, gd, gh, gw)
        if routing.shape[2:] != experts.shape[3:]:
            routing = F.interpolate(routing, size=experts.shape[3:], mode="nearest")
        return torch.einsum("beo...,be...->bo...", experts, routing.to(experts.dtype)) \
            + self.bias.to(experts.dtype).view(1, -1, 1, 1, 1)


class DrasCLRBlock(nn.Module):
    """cnn3d.py ``Block``: two stride-1 CondConvs and a stride-2 one, each with BatchNorm3d and ELU.

    Returns (features before the stride-2 conv, at the input resolution; the downsampled output).
    """

    def __init__(self, in_channels: int, out_channels: int, num_experts: int, num_coordinates: int):
        super().__init__()
        self.conv1 = CondConv3d(in_channels, out_channels, num_experts, num_coordinates)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = CondConv3d(out_channels, out_channels, num_experts, num_coordinates)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.conv3 = CondConv3d(out_channels, out_channels, num_experts, num_coordinates, stride=2)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor, location: torch.Tensor):
        x = self.act(self.bn1(self.conv1(x, location)))
        skip = self.act(self.bn2(self.conv2(x, location)))
        return skip, self.act(self.bn3(self.conv3(skip, location)))


class DrasCLREncoder(nn.Module):
    """cnn3d.py ``Encoder`` without its MoCo projection head ``fc`` (extract_feature.py removes it as well).

    ``forward(x, location)`` takes x (B, C, D, H, W) with every axis a multiple of 32, intensities in the
    authors' [-1, 1] (CT: [-1024, 240] HU, data/copd_patch.py), and ``location`` (B, 3) or (B, 3, D/32, H/32,
    W/32) in DrasCLR's (x, y, z) order; returns the skips of the six resolutions 1, 1/2, ..., 1/32 with
    ``output_channels`` channels. The last one is the authors' patch representation ``h`` per 32^3 cell.
    """

    def __init__(self, input_channels: int = 1, widths: Sequence[int] = DRASCLR_WIDTHS, rep_dim: int = 128,
                 num_experts: int = 8, num_coordinates: int = 1):
        super().__init__()
        if num_coordinates != 1:
            raise ConfigurationError(f"num_coordinates={num_coordinates}: nnFM gives the DrasCLR encoder one (x, y, z) "
                                     f"location per cell (train.py's default --num-coordinates 1).")
        if len(widths) != 5:
            raise ConfigurationError(f"widths must name 5 widths (conv1/conv2, the three Blocks, conv3), got {widths}")
        w0, w1, w2, w3, w4 = (int(w) for w in widths)
        e, c = num_experts, num_coordinates
        self.conv1 = CondConv3d(input_channels, w0, e, c)
        self.bn1 = nn.BatchNorm3d(w0)
        self.act = nn.ELU()
        self.conv2 = CondConv3d(w0, w0, e, c, stride=2)
        self.bn2 = nn.BatchNorm3d(w0)
        self.downsample1 = DrasCLRBlock(w0, w1, e, c)
        self.downsample2 = DrasCLRBlock(w1, w2, e, c)
        self.downsample3 = DrasCLRBlock(w2, w3, e, c)
        self.conv3 = CondConv3d(w3, w4, e, c)
        self.bn3 = nn.BatchNorm3d(w4)
        self.conv4 = CondConv3d(w4, rep_dim, e, c, stride=2)
        self.bn4 = nn.BatchNorm3d(rep_dim)
        self.output_channels = [w0, w1, w2, w3, w4, int(rep_dim)]

    def forward(self, x: torch.Tensor, location: torch.Tensor) -> List[torch.Tensor]:
        full = self.act(self.bn1(self.conv1(x, location)))
        x = self.act(self.bn2(self.conv2(full, location)))
        skips = [full]
        for block in (self.downsample1, self.downsample2, self.downsample3):
            skip, x = block(x, location)
            skips.append(skip)
        x = self.act(self.bn3(self.conv3(x, location)))
        skips.append(x)
        skips.append(self.act(self.bn4(self.conv4(x, location))))
        return skips


def tile_location_grid(spatial: Sequence[int], batch: int = 1, device=None, dtype=torch.float32) -> torch.Tensor:
    """The location of every 32^3 cell of a tile: (batch, 3, D/32, H/32, W/32), cell centres in [-1, 1].

    Channel order is DrasCLR's (x, y, z) = nnU-Net's array axes (z, y, x) reversed (SimpleITK reader, no
    transpose). A single-cell tile (32^3) is at (0, 0, 0). Raises ValueError for axes not divisible by 32.
    """
    if any(int(s) % PATCH for s in spatial):
        raise ValueError(f"tile {list(spatial)}: every axis must be a multiple of {PATCH} (one location per cell)")
    cells = [int(s) // PATCH for s in spatial]
    axes = [(torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1 for n in cells]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).flip(0)  # (z, y, x) -> (x, y, z)
    return grid.unsqueeze(0).expand(batch, -1, -1, -1, -1)


class DrasCLRSegmentationNetwork(nn.Module):
    """DrasCLR encoder (``self.encoder``, the published layout) + nnU-Net's U-Net decoder (``self.decoder``).

    Input: (B, C, D, H, W) as nnU-Net preprocessed them: raw HU for CT (the ``hu_window`` convention plans
    NoNormalization), nnU-Net-normalised otherwise. ``input_window`` (per channel [lower, upper] in those units, from
    the planner: the authors' [-1024, 240] HU for CT) is clipped and scaled to the encoder's [-1, 1].
    Inputs are padded with -1 (the authors pad with -1024 HU, 4_patchify_images.py ``pad_img``) to a multiple of
    32 and outputs cropped back; with ``pad_to_stride=False`` (nnFM plans) other sizes raise PatchSizeError.
    Output: logits (B, num_classes, D, H, W), with deep supervision a list at scales 1, 1/2, 1/4, 1/8, 1/16.
    The decoder is dynamic_network_architectures' ``UNetDecoder`` (transposed convs, 2 conv-norm-act per stage,
    instance norm, LeakyReLU: nnU-Net's defaults) over the encoder's six resolutions.
    """
    # the one input convention its planner and input stage give the encoder (nnfm/conventions.py)
    input_norm = HU_WINDOW.name
    INPUT_NORMS = (HU_WINDOW.name,)
    ndim = 3

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = True,
                 widths: Sequence[int] = DRASCLR_WIDTHS, rep_dim: int = 128, num_experts: int = 8,
                 num_coordinates: int = 1, input_window: Optional[Sequence[Sequence[float]]] = None,
                 zero_is_background: Optional[Sequence[bool]] = None, pad_to_stride: bool = True,
                 n_conv_per_stage_decoder: int = 2, **unused_nnunet_kwargs):
        super().__init__()
        self.stride = self.min_size = PATCH
        self.pad_to_stride = pad_to_stride
        self.input_window = IntensityWindow(input_channels, input_window, zero_is_background=zero_is_background)
        self.encoder = DrasCLREncoder(input_channels, widths, rep_dim, num_experts, num_coordinates)
        channels = self.encoder.output_channels
        # what UNetDecoder reads from an encoder; a plain namespace, so the encoder is not registered twice
        layout = SimpleNamespace(
            output_channels=channels, strides=[[1, 1, 1]] + [[2, 2, 2]] * (len(channels) - 1),
            kernel_sizes=[[3, 3, 3]] * len(channels), conv_op=nn.Conv3d, conv_bias=True, norm_op=nn.InstanceNorm3d,
            norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
            nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
        self.decoder = UNetDecoder(layout, num_classes, n_conv_per_stage_decoder, deep_supervision)
        self.dense_feature_channels = channels[-1]

    @property
    def deep_supervision_scales(self) -> List[List[float]]:
        return [[1 / 2 ** i] * 3 for i in range(len(self.encoder.output_channels) - 1)]

    def _encode(self, x: torch.Tensor, location: Optional[torch.Tensor]):
        spatial = list(x.shape[2:])
        x = self.input_window(x) * 2 - 1  # [0, 1] -> the authors' [-1, 1] (data/copd_patch.py: x / 632 - 1)
        if self.pad_to_stride:
            pads = [p for s in reversed(spatial) for p in (0, max(PATCH, s + (-s) % PATCH) - s)]
            x = F.pad(x, pads, value=-1.0) if any(pads) else x
        else:
            check_divisible(spatial, PATCH, PATCH)
        if location is None:
            location = tile_location_grid(x.shape[2:], x.shape[0], x.device, x.dtype)
        return spatial, self.encoder(x, location)

    def forward(self, x: torch.Tensor,
                location: Optional[torch.Tensor] = None) -> Union[torch.Tensor, List[torch.Tensor]]:
        """``location`` (optional): (B, 3) or (B, 3, D/32, H/32, W/32) after padding, DrasCLR's (x, y, z) order;
        default: the tile's cell centres (:func:`tile_location_grid`)."""
        spatial, skips = self._encode(x, location)
        out = self.decoder(skips)
        if not isinstance(out, list):
            return crop_to(out, spatial, 1.0)
        return [crop_to(o, spatial, s[0]) for o, s in zip(out, self.deep_supervision_scales)]

    @torch.no_grad()
    def dense_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, rep_dim, D, H, W): the authors' patch representation ``h`` (conv4 -> bn4 -> ELU)
        of every 32^3 cell, trilinearly interpolated to the voxels (nnFM_extract_features)."""
        spatial, skips = self._encode(x, None)
        h = skips[-1]
        padded = [s * PATCH for s in h.shape[2:]]
        return crop_to(F.interpolate(h, size=padded, mode="trilinear", align_corners=False), spatial, 1.0)

    def initialize(self, module: nn.Module) -> None:
        """get_network_from_plans' hook: He init for the decoder's (transposed) convs and the CondConv experts."""
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, CondConv3d):
            module.reset_parameters()


# ---- registry entries (nnfm/registry.py) ------------------------------------------------------------------
from nnfm.conventions import Recipe  # noqa: E402
from nnfm.encoder_entry import EncoderEntry, register_encoder  # noqa: E402  (registered beside the network)

# The authors publish no fine-tuning script, so their optimiser (batmanlab/DrasCLR train.py: torch.optim.SGD(lr
# (run_train.sh --lr=0.01), momentum=0.9, weight_decay=1e-4), plain momentum; --cos: lr * 0.5 * (1 + cos(pi e / E)))
DRASCLR_RECIPE = Recipe("SGD", 1e-2, 1e-4, "cosine", "batmanlab/DrasCLR train.py, run_train.sh", momentum=0.9,
                        nesterov=False)

_DRASCLR = dict(
    network_class=f"{DrasCLRSegmentationNetwork.__module__}.{DrasCLRSegmentationNetwork.__qualname__}",
    configuration="3d_fullres", planner="nnfm_planners.nnfm_drasclr_planner.nnFMDrasCLRPlanner",
    families=("drasclr",), token_stride=PATCH, min_axis=PATCH,
    input_convention=HU_WINDOW, recipe=DRASCLR_RECIPE)
register_encoder(EncoderEntry(
    name="drasclr", network_kwargs={"widths": list(DRASCLR_WIDTHS), "rep_dim": 128, "num_experts": 8,
                                    "num_coordinates": 1},
    trainer="nnFMTrainer_DrasCLR", scratch_trainer="nnFMTrainer_DrasCLR_scratch", weights="drasclr_copdgene",
    description="DrasCLR location-conditioned 3D CNN (Yu et al., MedIA 2023), MoCo-pretrained on COPDGene lung CT; "
                "location = cell position in the tile (documentation/drasclr.md)",
    license="none stated (batmanlab/DrasCLR has no licence file; COPDGene data-use terms)",
    status="loader tested on the published layout; trains + predicts (tiny preset on CPU)", **_DRASCLR))
register_encoder(EncoderEntry(
    name="drasclr_tiny", network_kwargs={"widths": [4, 8, 8, 16, 16], "rep_dim": 16, "num_experts": 2,
                                         "num_coordinates": 1},
    trainer="nnFMTrainer_DrasCLRTiny", scratch_trainer="nnFMTrainer_DrasCLRTiny_scratch", weights=None,
    description="DrasCLR at test size (widths 4..16, 2 experts): CPU runs and tests", license="-",
    status="trains + predicts (tests)", tiny=True, **_DRASCLR))
