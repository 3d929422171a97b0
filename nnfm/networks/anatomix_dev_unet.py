"""The anatomix-dev U-Net: the anatomix authors' larger experimental 3D U-Net, as registry presets.

Same network class as ``anatomix`` (:class:`~nnfm.networks.segmentation_unet.AnatomixSegmentationNetwork`
around :class:`~nnfm.networks.anatomix_unet.AnatomixUNet`); only the preset differs. Sources
(neel-dey/anatomix):

- architecture: anatomix/model/load_from_hf.py ``ANATOMIX_VARIANTS['anatomix-dev']['unet_kwargs']`` =
  ``Unet(dimension=3, input_nc=1, output_nc=32, num_downs=5, ngf=32, norm='instance', pooling='Avg',
  interp='trilinear', norm_eps=1e-2)``; anatomix/model/network.py ``Unet`` (reflect padding, ReLU, conv
  biases with non-affine instance norm). 94.4 M parameters.
- weights: ``anatomix-dev.pth`` on the Hugging Face repo ``neeldey/anatomix`` (``load_from_hf``), loaded
  strictly; nnFM's weights registry name ``anatomix-dev``.
- input: volumes clipped and min-max scaled to [0, 1] (anatomix/registration/registration_infrastructure/
  features.py ``minmax_normalize`` for the dev models; anatomix/segmentation/segmentation_utils.py
  ``ScaleIntensityd`` for fine-tuning): the same ``window01`` convention as anatomix.
- fine-tuning: anatomix/segmentation/train_segmentation.py with ``--hf_variant anatomix-dev``: a 1x1x1 head
  on the 32 output channels, Adam lr 2e-4, weight decay 0, cosine over the epochs (nnFMTrainer's recipe).
  The README's per-voxel feature normalisation is for out-of-the-box feature use (registration, kNN), not
  for fine-tuning, where the authors put the head on the raw features.

Five poolings: every patch axis is a multiple of 32 and at least 64 (reflect padding needs 2 voxels per
axis at the bottleneck).
"""
from nnfm.networks.anatomix_unet import ANATOMIX_DEV_PRESET
from nnfm.conventions import WINDOW01
from nnfm.encoder_entry import EncoderEntry, register_encoder
from nnfm.networks.segmentation_unet import ANATOMIX_RECIPE, AnatomixSegmentationNetwork


def _segmentation_kwargs(preset: dict) -> dict:
    """AnatomixUNet's preset in AnatomixSegmentationNetwork's kwarg names."""
    kwargs = dict(preset)
    kwargs["encoder_out_channels"] = kwargs.pop("out_channels")
    return kwargs


ANATOMIX_DEV_KWARGS = _segmentation_kwargs(ANATOMIX_DEV_PRESET)
# CPU tests and quick checks: the dev topology (depth, norm, pooling, upsampling) at 1/8 of the width
ANATOMIX_DEV_TINY_KWARGS = dict(ANATOMIX_DEV_KWARGS, ngf=4, encoder_out_channels=8)

_NETWORK = f"{AnatomixSegmentationNetwork.__module__}.{AnatomixSegmentationNetwork.__qualname__}"
# anatomix/segmentation/train_segmentation.py --hf_variant anatomix-dev: the same Adam 2e-4 cosine recipe
_RECIPE = ANATOMIX_RECIPE
_STRIDE = 2 ** ANATOMIX_DEV_PRESET["num_downs"]

register_encoder(EncoderEntry(
    name="anatomix_dev_unet", network_class=_NETWORK, network_kwargs=ANATOMIX_DEV_KWARGS,
    configuration="3d_fullres", planner="nnfm_planners.nnfm_planner.nnFMPlanner", trainer="nnFMTrainer_anatomixDev",
    scratch_trainer="nnFMTrainer_anatomixDev_scratch", families=("anatomix_dev_unet",), weights="anatomix-dev",
    input_convention=WINDOW01, recipe=_RECIPE, token_stride=_STRIDE, min_axis=2 * _STRIDE,
    description="anatomix-dev 3D U-Net (94 M; num_downs 5, ngf 32, instance norm, 32-ch output), the anatomix "
                "authors' larger experimental release",
    license="MIT", status="trains + predicts (tiny preset on CPU); loader tested on the published layout"))

register_encoder(EncoderEntry(
    name="anatomix_dev_unet_tiny", network_class=_NETWORK, network_kwargs=ANATOMIX_DEV_TINY_KWARGS,
    configuration="3d_fullres", planner="nnfm_planners.nnfm_planner.nnFMPlanner",
    trainer="nnFMTrainer_anatomixDevTiny", scratch_trainer="nnFMTrainer_anatomixDevTiny_scratch",
    families=("anatomix_dev_unet",), weights=None, input_convention=WINDOW01, recipe=_RECIPE,
    token_stride=_STRIDE, min_axis=2 * _STRIDE,
    description="anatomix-dev topology at ngf 4 (test size; no published weights)",
    license="-", status="test preset", tiny=True))
