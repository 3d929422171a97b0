"""Each checkpoint family gets the input it was made with (issue 11; table in nnfm/networks/input_conventions.py).

* MedDINOv3 sees nnU-Net's CT-normalised intensities as they are (the authors' fine-tuning input);
  official DINOv3 sees the planned window mapped to [0, 1] and ImageNet-normalised. Checked on the real CT in
  ../shared/data/CT_example through nnU-Net's CTNormalization (fingerprint of that image's labelled voxels)
  and the network's input layer, with the kwargs the ViT planner writes.
* anatomix sees the background of a masked-normalisation dataset (use_mask_for_norm) at 0, its own background.
"""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization, ZScoreNormalization

from nnfm.networks.dinov3_segmentation import IMAGENET_GREY_MEAN, IMAGENET_GREY_STD, DINOv3SegmentationNetwork
from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork
from nnfm.planning.intensity import measure_input_window
from nnfm.registry import get_encoder
from nnfm_planners.nnfm_planner import nnFMPlanner
from nnfm_planners.nnfm_vit_planner import nnFMViTPlanner

CT_EXAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "CT_example"
HU = np.array([0.0, 40.0, 80.0], dtype=np.float32)
TINY_VIT = {"embed_dim": 32, "depth": 4, "num_heads": 2}


@pytest.fixture(scope="module")
def ct_example():
    """(image path, nnU-Net foreground intensity properties of that image's labelled voxels)."""
    image_file = CT_EXAMPLE / "example_ct_sm.nii.gz"
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_file))).astype(np.float32)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(CT_EXAMPLE / "example_seg.nii.gz")))
    foreground = image[labels > 0]
    properties = {"mean": float(foreground.mean()), "std": float(foreground.std()),
                  "percentile_00_5": float(np.percentile(foreground, 0.5)),
                  "percentile_99_5": float(np.percentile(foreground, 99.5))}
    return image_file, properties


def _encoder_input(encoder: str, image_file: Path, properties: dict) -> np.ndarray:
    """HU -> nnU-Net's CTNormalization -> the planned network's input layer, for the ViT planner's kwargs."""
    planner = SimpleNamespace(network_kwargs=get_encoder(encoder).kwargs(), vit_kwargs=TINY_VIT)
    window = measure_input_window({"ct": {"images": [str(image_file)]}}, SimpleITKIO, ["CTNormalization"], [False],
                                  {"0": properties})
    kwargs = dict(nnFMViTPlanner.network_kwargs_for_plans(planner), input_window=window)
    network = DINOv3SegmentationNetwork(1, 2, **kwargs).eval()
    normalised = CTNormalization(False, properties).run(HU.copy())
    with torch.no_grad():
        return network.prepare_input(torch.from_numpy(normalised).view(1, 1, 1, -1)).flatten().numpy()


def test_meddinov3_sees_nnunets_ct_normalised_intensities_as_its_authors_fine_tune(ct_example):
    image_file, properties = ct_example
    got = _encoder_input("meddinov3_vitb16", image_file, properties)
    # the authors' input at 0 / 40 / 80 HU (issue 11: 0.17 / 0.32 / 0.46; nnFM before: 1.50 / 1.64 / 1.78)
    expected = (HU - properties["mean"]) / properties["std"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got, [0.17, 0.32, 0.46], atol=0.01)


@pytest.mark.parametrize("encoder", ["dinov3_vitb16", "dinov3_vits16"])
def test_official_dinov3_sees_the_window_in_0_1_then_imagenet_statistics(ct_example, encoder):
    image_file, properties = ct_example
    got = _encoder_input(encoder, image_file, properties)
    window = measure_input_window({"ct": {"images": [str(image_file)]}}, SimpleITKIO, ["CTNormalization"], [False],
                                  {"0": properties})[0]
    normalised = CTNormalization(False, properties).run(HU.copy())
    in_01 = np.clip((normalised - window[0]) / (window[1] - window[0]), 0, 1)
    np.testing.assert_allclose(got, (in_01 - IMAGENET_GREY_MEAN) / IMAGENET_GREY_STD, atol=1e-5)
    assert np.all(np.diff(got) > 0)  # soft tissue is resolved, not clipped


def _skull_stripped_volume(path: Path) -> None:
    """A brain-like blob (tissue 200-1000) in a zero background, as skull-stripped MRI: nnU-Net masks it."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:40, :40, :40]
    radius = np.sqrt((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2)
    image = np.where(radius < 15, rng.normal(600, 120, radius.shape).clip(200, 1000), 0).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(image), str(path))


def test_anatomix_sees_the_background_of_masked_normalisation_at_0(tmp_path):
    image_file = tmp_path / "brain_0000.nii.gz"
    _skull_stripped_volume(image_file)
    dataset = {"brain": {"images": [str(image_file)]}}
    # what nnFMPlanner writes for a use_mask_for_norm dataset
    planner = SimpleNamespace(dataset=dataset, determine_reader_writer=lambda: SimpleITKIO,
                              dataset_fingerprint={"foreground_intensity_properties_per_channel": {"0": {}}},
                              network_kwargs=get_encoder("anatomix").kwargs())
    kwargs = nnFMPlanner.architecture_kwargs(planner, [32, 32, 32], ["ZScoreNormalization"], [True])
    network = AnatomixSegmentationNetwork(1, 2, **kwargs).eval()
    # nnU-Net's preprocessing of that case: crop to the nonzero mask, z-score inside it, 0 outside
    data, _ = SimpleITKIO().read_images([str(image_file)])
    data, seg, _ = crop_to_nonzero(data.astype(np.float32), None)
    normalised = ZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(data[0].copy(), seg[0])
    outside = seg[0] < 0
    assert outside.any() and np.all(normalised[outside] == 0)
    x = torch.from_numpy(normalised)[None, None]
    x = torch.nn.functional.pad(x, (4, 4, 4, 4, 4, 4))  # nnU-Net's loader / sliding window pad data with 0
    with torch.no_grad():
        seen = network.input_window(x)[0, 0].numpy()
    inside = np.pad(~outside, 4)
    assert np.all(seen[~inside] == 0), f"background reaches the encoder at {np.unique(seen[~inside])[:5]}"
    assert 0.3 < np.median(seen[inside]) < 0.7 and seen[inside].max() == 1.0  # tissue keeps the window


def test_primus_plans_nnssls_per_image_zscore_for_every_channel_ct_included():
    """nnssl z-scores every channel per image (MIC-DKFZ/nnssl default_preprocessor.normalize); nnU-Net's own
    ZScoreNormalization does exactly that, so the Primus planner plans it instead of CTNormalization."""
    from nnfm_planners.nnfm_primus_planner import nnFMPrimusPlanner

    planner = SimpleNamespace(dataset_json={"channel_names": {"0": "CT", "1": "T2"}},
                              dataset_fingerprint={"median_relative_size_after_cropping": 1.0})
    schemes, use_mask = nnFMPrimusPlanner.determine_normalization_scheme_and_whether_mask_is_used_for_norm(planner)
    assert schemes == ["ZScoreNormalization", "ZScoreNormalization"] and use_mask == [False, False]
    planner.dataset_fingerprint["median_relative_size_after_cropping"] = 0.5  # skull-stripped: nnU-Net's mask rule
    assert nnFMPrimusPlanner.determine_normalization_scheme_and_whether_mask_is_used_for_norm(planner)[1] == [True] * 2
    # on CT_example's HU, per-image z-score gives zero mean / unit std over the whole image, as nnssl
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(CT_EXAMPLE / "example_ct_sm.nii.gz"))).astype(np.float32)
    z = ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(image.copy())
    assert abs(z.mean()) < 1e-3 and abs(z.std() - 1) < 1e-3
