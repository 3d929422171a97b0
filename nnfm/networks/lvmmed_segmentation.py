"""LVM-Med ResNet-50 as the encoder of a 2D U-Net for nnU-Net's ``2d`` configuration.

Encoder: torchvision's ResNet-50 without ``fc`` / ``avgpool``, exactly LVM-Med's ``ResNetEncoder``
(duyhominhnguyen/LVM-Med segmentation_models_pytorch_example/encoders/resnet.py, resnet50 params), so the
published ``lvmmed_resnet.torch`` loads key for key. Its five stages give features at 1/2 (64 channels, after
conv1-bn1-relu), 1/4 (256, maxpool + layer1), 1/8 (512), 1/16 (1024) and 1/32 (2048).

Decoder: the U-Net decoder LVM-Med fine-tunes with, segmentation_models_pytorch's ``Unet`` (LVM-Med
segmentation_2d/train_R50_seg_adam_optimizer_2d.py: ``smp.Unet(encoder_name="resnet50", ...)``): decoder
channels 256-128-64-32-16, each block nearest 2x upsampling, concatenation with the encoder feature of that
resolution (none at full resolution) and two 3x3 conv-BN-ReLU; a 3x3 segmentation head. Written here (smp is
not a dependency), with nnU-Net's conventions added: the per-class layers are ``decoder.seg_layers`` (1x1 heads
on the coarser blocks give deep-supervision outputs at 1/2 ... 1/16 when nnU-Net asks for them).

Input convention (LVM-Med dataloader/dataset_ete.py ``SegmentationDataset.preprocess``): each image min-max
scaled to [0, 255], no mean/std normalisation, grey images read as 3 identical channels (cv2.imread).
Here: nnU-Net's normalised intensities -> the planned percentile window -> [0, 1] -> x 255 (the per-image
min-max becomes a dataset-wide window, as for anatomix); grey -> RGB is folded into conv1 (the loader sums the
RGB kernels, which gives the same response as repeating the grey channel 3 times).
"""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from nnfm.conventions import WINDOW255
from nnfm.errors import ConfigurationError
from nnfm.networks.intensity_window import IntensityWindow
from nnfm.networks.stride_padding import check_divisible, crop_to, pad_to_multiple

STRIDE = 32
DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp Unet's default decoder_channels
# LVM-Med feeds images in [0, 255] (dataset_ete.py: uint8 min-max, .float(), no division)
INPUT_SCALE = 255.0


class ResNet50Encoder(ResNet):
    """torchvision ResNet-50 without ``fc`` and ``avgpool`` (LVM-Med's ResNetEncoder); returns the five stage
    features (B, 64, H/2, W/2), (B, 256, H/4, W/4), (B, 512, H/8), (B, 1024, H/16), (B, 2048, H/32)."""
    out_channels = (64, 256, 512, 1024, 2048)

    def __init__(self, in_channels: int = 3):
        super().__init__(Bottleneck, [3, 4, 6, 3])
        del self.fc, self.avgpool
        if in_channels != 3:  # pretrained RGB kernels are adapted by the loader (stem key conv1.weight)
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        f1 = self.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        return [f1, f2, f3, f4, self.layer4(f4)]


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # smp's Conv2dReLU with use_batchnorm=True: conv without bias, BN, ReLU
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetDecoder2D(nn.Module):
    """smp-style U-Net decoder over the five ResNet stages, with nnU-Net's ``seg_layers`` / ``deep_supervision``.

    forward(features fine to coarse) -> (B, classes, H, W), or with deep supervision a list at 1, 1/2, 1/4,
    1/8, 1/16 of the input resolution (finest first, as nnU-Net expects).
    """

    def __init__(self, encoder_channels: Sequence[int], num_classes: int, deep_supervision: bool,
                 decoder_channels: Sequence[int] = DECODER_CHANNELS):
        super().__init__()
        self.deep_supervision = deep_supervision
        skips = list(reversed(encoder_channels[:-1])) + [0]  # 1024, 512, 256, 64, then none at full resolution
        inputs = [encoder_channels[-1]] + list(decoder_channels[:-1])
        self.blocks = nn.ModuleList(nn.Sequential(_conv_bn_relu(i + s, o), _conv_bn_relu(o, o))
                                    for i, s, o in zip(inputs, skips, decoder_channels))
        # seg_layers[0]: smp's SegmentationHead (3x3) on the full-resolution block; the others: 1x1 heads on the
        # coarser blocks for nnU-Net's deep supervision
        finest_first = list(reversed(decoder_channels))
        self.seg_layers = nn.ModuleList([nn.Conv2d(finest_first[0], num_classes, 3, padding=1)] +
                                        [nn.Conv2d(c, num_classes, 1) for c in finest_first[1:]])

    def forward(self, features: List[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
        x, outputs = features[-1], []
        skips = list(reversed(features[:-1])) + [None]
        for block, skip in zip(self.blocks, skips):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(x if skip is None else torch.cat([x, skip], dim=1))
            outputs.append(x)
        if not self.deep_supervision:
            return self.seg_layers[0](outputs[-1])
        return [head(o) for head, o in zip(self.seg_layers, reversed(outputs))]


class LVMMedSegmentationNetwork(nn.Module):
    """LVM-Med ResNet-50 (``self.encoder``) + smp-style U-Net decoder (``self.decoder``), 2D.

    Input (B, C, H, W) in nnU-Net's normalised intensities; with ``pad_to_stride`` False every axis must be a
    multiple of 32 (PatchSizeError otherwise), else inputs are zero-padded after the window and outputs cropped.
    """
    # the one input convention its planner and input stage give the encoder (nnfm/conventions.py)
    input_norm = WINDOW255.name
    INPUT_NORMS = (WINDOW255.name,)
    ndim = 2
    stride = STRIDE
    min_size = STRIDE

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 input_window: Optional[Sequence[Sequence[float]]] = None, pad_to_stride: bool = True,
                 zero_is_background: Optional[Sequence[bool]] = None,
                 decoder_channels: Sequence[int] = DECODER_CHANNELS, **unused_nnunet_kwargs):
        super().__init__()
        if len(decoder_channels) != 5:
            raise ConfigurationError(f"decoder_channels needs one entry per ResNet stage (5), got {decoder_channels}.")
        self.pad_to_stride = pad_to_stride
        self.input_window = IntensityWindow(input_channels, input_window, ndim=2, zero_is_background=zero_is_background)
        self.encoder = ResNet50Encoder(input_channels)
        self.decoder = UNetDecoder2D(ResNet50Encoder.out_channels, num_classes, deep_supervision, decoder_channels)

    @property
    def deep_supervision_scales(self) -> List[List[float]]:
        return [[1 / 2 ** i] * 2 for i in range(len(self.decoder.seg_layers))]

    def forward(self, x: torch.Tensor):
        spatial = x.shape[2:]
        if len(spatial) != 2:
            raise ConfigurationError(f"The LVM-Med network is 2D; got a {len(spatial)}D input. Use the 2d "
                                     f"configuration of nnFMPlans_lvmmed_resnet50.")
        x = self.input_window(x) * INPUT_SCALE
        if self.pad_to_stride:
            x = pad_to_multiple(x, STRIDE, minimum=STRIDE)  # after the window: 0 is the darkest intensity
        else:
            check_divisible(spatial, STRIDE, STRIDE)
        out = self.decoder(self.encoder(x))
        if not isinstance(out, list):
            return crop_to(out, spatial, 1.0)
        return [crop_to(o, spatial, s[0]) for o, s in zip(out, self.deep_supervision_scales)]

    def initialize(self, module: nn.Module) -> None:
        """Called by get_network_from_plans: Kaiming (fan-out) for convs, BN to identity, as torchvision's ResNet
        initialises itself; pretrained encoder weights are loaded afterwards."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# ---- registry entry (nnfm/registry.py) -------------------------------------------------------------------
from nnfm.conventions import Recipe  # noqa: E402
from nnfm.encoder_entry import EncoderEntry, register_encoder  # noqa: E402  (registered beside the network)

# duyhominhnguyen/LVM-Med segmentation_2d/train_R50_seg_adam_optimizer_2d.py with yaml_data/*_endtoend_R50.yml:
# Adam lr 1e-4, betas (0.9, 0.999), weight decay 0, no scheduler, gradient norm clipped at 1 (README), one output
LVMMED_RECIPE = Recipe("Adam", 1e-4, 0.0, "constant", "LVM-Med segmentation_2d/train_R50_seg_adam_optimizer_2d.py, "
                       "yaml_data/*_endtoend_R50.yml", betas=(0.9, 0.999), grad_clip=1.0, deep_supervision=False)

register_encoder(EncoderEntry(
    name="lvmmed_resnet50",
    network_class=f"{LVMMedSegmentationNetwork.__module__}.{LVMMedSegmentationNetwork.__qualname__}",
    network_kwargs={"decoder_channels": list(DECODER_CHANNELS)},
    configuration="2d", planner="nnfm_planners.nnfm_lvmmed_planner.nnFMLVMMedPlanner",
    trainer="nnFMTrainer_LVMMed", scratch_trainer="nnFMTrainer_LVMMed_scratch",
    families=("lvmmed_resnet50",), weights="lvmmed_resnet50",
    input_convention=WINDOW255, recipe=LVMMED_RECIPE,
    token_stride=STRIDE, min_axis=STRIDE,
    description="LVM-Med ResNet-50 (graph-matching SSL on 1.3M medical images) + smp-style U-Net decoder, 2D",
    license="CC BY-NC-ND 2.0 (academic research only; LVM-Med README)",
    status="trains + predicts on CPU (2D, 25M-parameter encoder); loader tested on the published layout"))
