"""Each set of weights gets the input it was made with (issues 11 and 26; the records in nnfm/conventions.py).

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

from nnfm.conventions import WINDOW01
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
                              network_kwargs=get_encoder("anatomix").kwargs(), input_convention=WINDOW01)
    planner.measured_window = lambda schemes, use_mask: nnFMPlanner.measured_window(planner, schemes, use_mask)
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


def _planner_stand_in(planner_class, encoder: str, channel_names: dict, weights=None):
    """A planner of ``encoder`` with only what normalisation planning reads (no dataset on disk)."""
    from nnfm.weights.input_convention import planned_convention

    planner = planner_class.__new__(planner_class)
    entry = get_encoder(encoder)
    planner.__dict__.update(dataset_json={"channel_names": channel_names}, entry=entry,
                            dataset_fingerprint={"median_relative_size_after_cropping": 1.0},
                            input_convention=planned_convention(entry, weights or entry.weights))
    return planner


def test_primus_plans_nnssls_per_image_zscore_for_every_channel_ct_included():
    """nnssl z-scores every channel per image (MIC-DKFZ/nnssl default_preprocessor.normalize); nnU-Net's own
    ZScoreNormalization does exactly that, so the Primus planner plans it instead of CTNormalization."""
    from nnfm_planners.nnfm_primus_planner import nnFMPrimusPlanner

    planner = _planner_stand_in(nnFMPrimusPlanner, "primus_m", {"0": "CT", "1": "T2"})
    schemes, use_mask = planner.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
    assert schemes == ["ZScoreNormalization", "ZScoreNormalization"] and use_mask == [False, False]
    planner.dataset_fingerprint["median_relative_size_after_cropping"] = 0.5  # skull-stripped: nnU-Net's mask rule
    assert planner.determine_normalization_scheme_and_whether_mask_is_used_for_norm()[1] == [True] * 2
    # on CT_example's HU, per-image z-score gives zero mean / unit std over the whole image, as nnssl
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(CT_EXAMPLE / "example_ct_sm.nii.gz"))).astype(np.float32)
    z = ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(image.copy())
    assert abs(z.mean()) < 1e-3 and abs(z.std() - 1) < 1e-3


def test_mae_weights_are_planned_and_fed_the_per_image_zscores_they_were_pretrained_on():
    """anatomix_mae_hippocampus (nnFM_pretrain mae) was pretrained on per-image z-scores (mae/cases.py). Planned
    for these weights, every channel is z-scored per image and the anatomix network feeds that as it is, in
    training and in eval mode (nnFM_extract_features, a frozen encoder). Before issue 26 it went through anatomix's
    [0, 1] window: in eval mode with the stored batch-norm statistics the output was 205 % off (relative)."""
    from nnfm.errors import ConfigurationError
    from nnfm.features.extract import build_feature_network
    from nnfm.weights import load_pretrained
    from nnfm.weights.input_convention import check_fed_convention, planned_convention

    entry = get_encoder("anatomix")
    assert entry.input_convention.name == "window01"  # the encoder's own (published, synthetic) weights
    convention = planned_convention(entry, "anatomix_mae_hippocampus")
    assert convention.name == "zscore" and convention.planned_normalization == "ZScoreNormalization"
    planner = _planner_stand_in(nnFMPlanner, "anatomix", {"0": "T1", "1": "CT"}, weights="anatomix_mae_hippocampus")
    assert planner.determine_normalization_scheme_and_whether_mask_is_used_for_norm()[0] == ["ZScoreNormalization"] * 2
    network, report = build_feature_network(entry, 1, None, "anatomix_mae_hippocampus")
    assert report.input_convention == "zscore" and network.input_norm == "zscore" and not network.training
    x = torch.randn(1, 1, 32, 48, 32)  # nnU-Net's per-image z-scores
    with torch.no_grad():
        assert torch.equal(network.dense_features(x), network.encoder(x))
    # plans that feed anatomix's [0, 1] window refuse these weights at load (trainer and nnFM_extract_features)
    window_network = AnatomixSegmentationNetwork(1, 3, **entry.kwargs())
    report = load_pretrained(window_network.encoder, "anatomix_mae_hippocampus")
    with pytest.raises(ConfigurationError, match=r"pretrained on input convention `zscore`.*feed the network "
                                                 r"`window01`.*-e anatomix -w anatomix_mae_hippocampus"):
        check_fed_convention(window_network, report.input_convention, "anatomix_mae_hippocampus", "anatomix",
                             "3d_fullres")
    with pytest.raises(ConfigurationError, match="pretrained on input convention `zscore`"):
        build_feature_network(entry, 1, dict(entry.kwargs(), input_norm="window01"), "anatomix_mae_hippocampus")


def test_weights_of_a_convention_the_network_cannot_apply_are_refused_at_planning():
    from nnfm.errors import ConfigurationError
    from nnfm.weights.input_convention import planned_convention

    # DrasCLR weights saw raw CT in a HU window; the anatomix U-Net applies [0, 1] windows or z-scores only
    with pytest.raises(ConfigurationError, match="pretrained on input convention `hu_window`.*can only be fed "
                                                 "window01, zscore"):
        planned_convention(get_encoder("anatomix"), "drasclr_copdgene")


def test_every_registered_and_embedded_weights_file_states_its_convention():
    """Registry weights state theirs; an embedded file's provenance JSON says the same."""
    import json

    from nnfm.conventions import CONVENTIONS
    from nnfm.weights.registry import available_weights, embedded_path, get_weights_entry

    for name in available_weights():
        entry = get_weights_entry(name)
        assert entry.input_convention in CONVENTIONS, name
        if entry.embedded:
            facts = json.loads(embedded_path(entry).with_suffix(".json").read_text())
            assert facts["input_convention"] == entry.input_convention, name


def test_the_trainers_convention_error_names_the_dataset_it_trains(hippocampus, nnunet_env, monkeypatch, tmp_path):
    """nnUNetv2_train with weights of another convention than the plans feed stops at initialisation with a
    planning command for this very dataset (its id), not a placeholder to fill in."""
    from conftest import trainer_in_process
    from nnfm.errors import ConfigurationError
    from nnfm_trainers.nnfm_trainer import nnFMTrainer

    trainer = trainer_in_process(nnFMTrainer, hippocampus, nnunet_env, monkeypatch, tmp_path,
                                 nnFM_WEIGHTS="anatomix_mae_hippocampus")  # zscore weights, window01 plans
    with pytest.raises(ConfigurationError, match=rf"`window01`.*nnFM_plan_and_preprocess -d {hippocampus['id']} "
                                                 r"-e anatomix -w anatomix_mae_hippocampus"):
        trainer.initialize()
