"""nnFM_extract_features: dense features in the input's own geometry (real CT and MRI from ../shared), features that
move with the image, plans-driven resampling, and bad input refused before any image is processed."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import HIPPOCAMPUS, SHARED, run_cli
from nnfm.errors import ConfigurationError
from nnfm.features.extract import default_plans, extract_features, main

CT = SHARED / "data" / "CT_example" / "example_ct_sm.nii.gz"
MRI = HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"


@pytest.fixture(scope="module")
def anatomix_he(tmp_path_factory):
    """anatomix.pth's layout with nnU-Net's He initialisation (seeded) and fresh batch-norm statistics: features
    that vary over the image, unlike a layout filled with small random numbers, whose activations die out."""
    from nnfm.networks import AnatomixSegmentationNetwork

    torch.manual_seed(0)
    network = AnatomixSegmentationNetwork(1, 2)
    network.apply(network.initialize)
    path = tmp_path_factory.mktemp("weights") / "anatomix_he.pth"
    torch.save(network.encoder.state_dict(), path)
    return path


def _features(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)  # (channels, z, y, x)


def _assert_same_geometry(features_image, source_file):
    source = sitk.ReadImage(str(source_file))
    assert features_image.GetDimension() == 4
    assert features_image.GetSize()[:3] == source.GetSize()
    np.testing.assert_allclose(features_image.GetSpacing()[:3], source.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(features_image.GetOrigin()[:3], source.GetOrigin(), atol=1e-4)
    direction = np.array(features_image.GetDirection()).reshape(4, 4)
    np.testing.assert_allclose(direction[:3, :3], np.array(source.GetDirection()).reshape(3, 3), atol=1e-6)


def test_anatomix_features_of_a_real_ct_have_its_geometry_and_16_channels(anatomix_he, nnunet_env, tmp_path):
    """Through the console script: one CT (3 mm, flipped direction), native grid, HU window, overlapping tiles."""
    result = run_cli(["nnFM_extract_features", "-i", CT, "-o", tmp_path / "out", "-e", "anatomix",
                      "-w", anatomix_he, "--normalization", "ct", "--ct-window", "-1000", "1000",
                      "--tile", "32", "64", "64", "--device", "cpu"], nnunet_env)
    assert "wrote 1 feature image" in result.stdout and "loaded 115" in result.stderr
    image, array = _features(tmp_path / "out" / "example_ct_sm.nii.gz")
    _assert_same_geometry(image, CT)
    assert image.GetSize()[3] == 16 and array.dtype == np.float32 and np.isfinite(array).all()
    assert (array.std(axis=(1, 2, 3)) > 1e-3 * np.abs(array).mean()).all()  # every channel varies over the image


def test_features_of_a_shifted_image_shift_with_it(anatomix_he, tmp_path):
    """The CT without its first k columns (origin moved by k voxels): same anatomy, same physical place. Its
    features equal the full image's k columns further on (tiles fall differently: not bit-equal), and not the
    unshifted ones."""
    k = 16
    source = sitk.ReadImage(str(CT))
    shifted = source[k:, :, :]  # SimpleITK slicing keeps the physical positions (origin moves by k voxels)
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    common = dict(encoder="anatomix", weights=str(anatomix_he), normalization="ct", ct_window=(-1000, 1000),
                  tile=(32, 64, 64), device="cpu", progress=False)
    extract_features([str(CT)], str(tmp_path / "a"), **common)
    extract_features([str(tmp_path / "shifted.nii.gz")], str(tmp_path / "b"), **common)
    full = _features(tmp_path / "a" / "example_ct_sm.nii.gz")[1]
    image, moved = _features(tmp_path / "b" / "shifted.nii.gz")
    _assert_same_geometry(image, tmp_path / "shifted.nii.gz")
    margin = 8  # away from the image borders, where padding differs
    interior = moved[:, margin:-margin, margin:-margin, margin:-margin]
    aligned = full[:, margin:-margin, margin:-margin, k + margin:-margin]
    unaligned = full[:, margin:-margin, margin:-margin, margin:-margin - k]

    def relative_error(a, b):
        return float(np.abs(a - b).mean() / np.abs(b).mean())

    def correlation(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    # measured: aligned 0.9993 / 2.7 %, unaligned 0.988 / 11.7 % (neighbouring CT features are alike at 3 mm)
    assert correlation(interior, aligned) > 0.995 and relative_error(interior, aligned) < 0.05
    assert relative_error(interior, unaligned) > 3 * relative_error(interior, aligned)


def test_drasclr_features_and_plans_given_resampling_back_to_the_input_grid(tmp_path):
    """A plans file at 1.5 mm (nnU-Net resamples to it and back): DrasCLR's representation per cell (16 channels for
    the tiny preset), z-scored MRI, in the 1 mm input's geometry."""
    plans = default_plans(1, (32, 32, 32), "zscore", None, (1.5, 1.5, 1.5))
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    written = extract_features([str(MRI)], str(tmp_path / "out"), encoder="drasclr_tiny", weights="random",
                               plans=str(tmp_path / "plans.json"), device="cpu", progress=False)
    image, array = _features(written[0])
    _assert_same_geometry(image, MRI)
    assert image.GetSize()[3] == 16 and np.isfinite(array).all() and array.std() > 0


# ---- bad input: refused before any image is read or written ----------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(inputs=["/no/such/image.nii.gz"]), "does not exist"),
    (dict(encoder="no_such_encoder"), "Unknown encoder"),
    (dict(encoder="dinov3_vits16"), "no dense 3D features.*anatomix"),
    (dict(tile=(40, 64, 64)), r"tile \[40, 64, 64\].*multiple of 16.*--tile 48 64 64"),
    (dict(normalization="ct"), "needs --ct-window"),
    (dict(normalization="zscore", ct_window=(-1000, 1000)), "--ct-window applies to --normalization ct only"),
    (dict(spacing=(1.0, 0.0, 1.0)), "three positive values"),
    (dict(step_size=1.5), "step_size"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, kwargs, message):
    arguments = dict(inputs=[str(CT)], output=str(tmp_path / "out"), weights="random", device="cpu", progress=False)
    arguments.update(kwargs)
    with pytest.raises(ConfigurationError, match=message):
        extract_features(**arguments)
    assert not (tmp_path / "out").exists()


def test_two_d_and_multi_component_images_are_refused(tmp_path):
    sitk.WriteImage(sitk.Image(40, 30, sitk.sitkFloat32), str(tmp_path / "slice.nii.gz"))
    with pytest.raises(ConfigurationError, match="2D image of size.*3D"):
        extract_features([str(tmp_path / "slice.nii.gz")], str(tmp_path / "out"), weights="random", progress=False)
    sitk.WriteImage(sitk.Image([20, 20, 20], sitk.sitkVectorFloat32, 2), str(tmp_path / "vector.nii.gz"))
    with pytest.raises(ConfigurationError, match="2 component"):
        extract_features([str(tmp_path / "vector.nii.gz")], str(tmp_path / "out"), weights="random", progress=False)


def test_plans_problems_are_named(tmp_path):
    with pytest.raises(ConfigurationError, match="plans file .* does not exist"):
        extract_features([str(CT)], str(tmp_path / "o"), plans=str(tmp_path / "none.json"), weights="random")
    (tmp_path / "plans.json").write_text(json.dumps(default_plans(2, (32, 32, 32), "zscore", None, None)))
    with pytest.raises(ConfigurationError, match="no configuration '2d'.*3d_fullres"):
        extract_features([str(CT)], str(tmp_path / "o"), plans=str(tmp_path / "plans.json"), configuration="2d",
                         weights="random")
    with pytest.raises(ConfigurationError, match="plans normalise 2 channel.*images have 1"):
        extract_features([str(CT)], str(tmp_path / "o"), plans=str(tmp_path / "plans.json"), weights="random")
    with pytest.raises(ConfigurationError, match="leave out --normalization"):
        extract_features([str(CT)], str(tmp_path / "o"), plans=str(tmp_path / "plans.json"), normalization="ct",
                         weights="random")


def test_the_console_script_exits_with_the_message(tmp_path, capsys):
    with pytest.raises(SystemExit, match="nnFM_extract_features: input .*missing.nii.gz does not exist"):
        main(["-i", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "out"), "-w", "random"])


def test_anatomix_dev_vit_features_are_its_pretrained_32_channel_up_projection(tmp_path):
    """Without plans the PrimusV2 network is built with the pretrained up-projection (keep_up_projection, the
    authors' registration features, anatomix registration_infrastructure/features.py) for the tile's shape."""
    written = extract_features([str(MRI)], str(tmp_path / "out"), encoder="anatomix_dev_vit_tiny", weights="random",
                               tile=(32, 32, 32), device="cpu", progress=False)
    image, array = _features(written[0])
    _assert_same_geometry(image, MRI)
    assert image.GetSize()[3] == 32 and np.isfinite(array).all() and array.std() > 0
    from nnfm.features.extract import feature_encoders
    assert "anatomix_dev_vit" in feature_encoders() and "primus_v3_s" not in feature_encoders()  # no weights
