from nnfm.networks.anatomix_unet import AnatomixUNet
from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork

__all__ = ["AnatomixUNet", "AnatomixSegmentationNetwork"]
