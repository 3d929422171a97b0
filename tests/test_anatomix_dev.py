"""anatomix-dev U-Net (issue 15, item 1): the published layout loads strictly into the dev preset of the
anatomix network class, its stem adapts to more channels, files of the other anatomix preset are refused with
the encoder to plan with, and the full preset plans; the tiny dev preset trains and predicts through nnU-Net's CLIs
in tests/test_tiny_presets_e2e.py."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import LAYOUTS, random_state_dict_from_layout
from nnfm.errors import CheckpointMismatchError, WrongCheckpointFamilyError
from nnfm.networks import AnatomixSegmentationNetwork, AnatomixUNet
from nnfm.networks.anatomix_unet import ANATOMIX_DEV_PRESET
from nnfm.registry import get_encoder
from nnfm.weights import load_pretrained
from nnfm.weights.filters_anatomix_dev import anatomix_unet_preset

DEV = LAYOUTS / "anatomix_dev_unet.json"
ANATOMIX = LAYOUTS / "anatomix_unet.json"
DEV_ENTRY = get_encoder("anatomix_dev_unet")
TINY_ENTRY = get_encoder("anatomix_dev_unet_tiny")


def _save(tmp_path, obj, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _segmentation_network(entry, input_channels=1, num_classes=3, deep_supervision=False):
    return AnatomixSegmentationNetwork(input_channels, num_classes, deep_supervision, **entry.kwargs())


def _random_state_of(module: nn.Module, seed: int = 1) -> dict:
    """A checkpoint of ``module``'s exact layout with random values (what a trained file of that size holds)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator) * 0.1 for k, v in module.state_dict().items()}


def test_dev_preset_is_the_authors_anatomix_dev_network():
    """anatomix/model/load_from_hf.py ANATOMIX_VARIANTS['anatomix-dev'] through anatomix/model/network.py Unet."""
    encoder = _segmentation_network(DEV_ENTRY).encoder
    layers = list(encoder.model)
    norms = [m for m in layers if isinstance(m, nn.InstanceNorm3d)]
    assert len(norms) == 23 and all(not m.affine and not m.track_running_stats and m.eps == 1e-2 for m in norms)
    assert not any(isinstance(m, (nn.BatchNorm3d, nn.MaxPool3d)) for m in layers)
    assert sum(isinstance(m, nn.AvgPool3d) for m in layers) == 5
    assert {m.mode for m in layers if isinstance(m, nn.Upsample)} == {"trilinear"}
    convs = [m for m in layers if isinstance(m, nn.Conv3d)]
    assert all(c.bias is not None and c.padding_mode == "reflect" for c in convs)
    assert convs[-1].out_channels == 32 and sum(p.numel() for p in encoder.parameters()) == 94369568
    assert DEV_ENTRY.token_stride == 32 and DEV_ENTRY.min_axis == 64


@pytest.mark.parametrize("prefix", ["", "_orig_mod."])
def test_published_dev_layout_loads_strictly_with_equal_values(tmp_path, prefix):
    """Every key of anatomix-dev.pth, in the authors' order, loads with its value; load_from_hf.py strips the
    '_orig_mod.' prefix of files saved from torch.compile, and so does nnFM."""
    state = random_state_dict_from_layout(DEV)
    network = _segmentation_network(DEV_ENTRY)
    assert list(network.encoder.state_dict()) == list(state)  # same keys in the same order
    report = load_pretrained(network.encoder, _save(tmp_path, {prefix + k: v for k, v in state.items()}),
                             family=DEV_ENTRY.families)
    assert report.ok and report.family == "anatomix_dev_unet" and len(report.loaded) == 48
    assert not report.adapted and not report.intentionally_dropped
    for key, value in network.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_presets_are_read_back_from_the_published_shapes():
    assert anatomix_unet_preset(random_state_dict_from_layout(DEV)) == {
        "in_channels": 1, "out_channels": 32, "num_downs": 5, "ngf": 32, "norm": "instance"}
    assert anatomix_unet_preset(random_state_dict_from_layout(ANATOMIX)) == {
        "in_channels": 1, "out_channels": 16, "num_downs": 4, "ngf": 16, "norm": "batch"}


def test_dev_stem_adapts_from_one_to_two_channels(tmp_path):
    state = random_state_dict_from_layout(DEV)
    network = _segmentation_network(DEV_ENTRY, input_channels=2)
    report = load_pretrained(network.encoder, _save(tmp_path, state), family=DEV_ENTRY.families)
    assert report.adapted == {"model.0.weight": "1 -> 2 (repeat / 2)"}
    assert torch.equal(network.encoder.model[0].weight, state["model.0.weight"].repeat(1, 2, 1, 1, 1) / 2)
    assert torch.equal(network.encoder.model[0].bias, state["model.0.bias"])


def test_adapted_stem_gives_the_same_features_for_a_repeated_channel(tmp_path):
    """Run at the tiny width (the dev topology: instance norm, average pooling, trilinear upsampling)."""
    kwargs = TINY_ENTRY.kwargs()
    original = AnatomixUNet(1, kwargs["encoder_out_channels"], kwargs["num_downs"], kwargs["ngf"], kwargs["norm"],
                            norm_eps=kwargs["norm_eps"], pooling=kwargs["pooling"], interp=kwargs["interp"])
    state = _random_state_of(original)
    original.load_state_dict(state)
    adapted = _segmentation_network(TINY_ENTRY, input_channels=2).encoder
    load_pretrained(adapted, _save(tmp_path, state), family=TINY_ENTRY.families)
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():  # float32 summation order differs (2 channels x w/2 vs 1 x w): equal to rounding
        expected, got = original.eval()(x), adapted.eval()(x.repeat(1, 2, 1, 1, 1))
    assert torch.allclose(expected, got, rtol=1e-4, atol=1e-4)


def test_anatomix_file_is_refused_by_the_dev_preset_naming_the_encoder_to_plan_with(tmp_path):
    path = _save(tmp_path, random_state_dict_from_layout(ANATOMIX))
    with pytest.raises(WrongCheckpointFamilyError,
                       match=r"'anatomix_unet' checkpoint, but this network needs 'anatomix_dev_unet'.*"
                             r"-e anatomix and train with -tr nnFMTrainer\b.*anatomix-dev"):
        load_pretrained(_segmentation_network(DEV_ENTRY).encoder, path, family=DEV_ENTRY.families)


def test_dev_file_is_refused_by_the_anatomix_preset_naming_the_encoder_to_plan_with(tmp_path):
    path = _save(tmp_path, random_state_dict_from_layout(DEV))
    entry = get_encoder("anatomix")
    with pytest.raises(WrongCheckpointFamilyError,
                       match=r"'anatomix_dev_unet' checkpoint, but this network needs 'anatomix_unet'.*"
                             r"-e anatomix_dev_unet and train with -tr nnFMTrainer_anatomixDev"):
        load_pretrained(_segmentation_network(entry).encoder, path, family=entry.families)


def test_dev_file_of_another_size_is_refused_naming_the_preset_that_fits(tmp_path):
    path = _save(tmp_path, random_state_dict_from_layout(DEV))
    with pytest.raises(CheckpointMismatchError, match=r"num_downs=5, ngf=32, 32 output channels.*built with "
                                                      r"num_downs=5, ngf=4, 8 output channels.*-e anatomix_dev_unet "):
        load_pretrained(_segmentation_network(TINY_ENTRY).encoder, path, family=TINY_ENTRY.families)


def test_earlier_dev_release_is_refused_with_the_kwargs_it_needs(tmp_path):
    """The repository's history has an 'anatomix-dev' of num_downs=5, ngf=20 and 16 outputs (load_from_hf.py)."""
    earlier = AnatomixUNet(1, 16, 5, 20, "instance", pooling="Avg", interp="trilinear")
    path = _save(tmp_path, _random_state_of(earlier))
    with pytest.raises(CheckpointMismatchError, match=r"ngf=20, 16 output channels.*no registered encoder.*"
                                                      r"ngf=20, encoder_out_channels=16 in the plans' arch_kwargs"):
        load_pretrained(_segmentation_network(DEV_ENTRY).encoder, path, family=DEV_ENTRY.families)


def test_tiny_dev_network_pads_any_patch_and_supervises_five_scales():
    network = _segmentation_network(TINY_ENTRY, num_classes=3, deep_supervision=True).eval()
    outputs = network(torch.rand(1, 1, 36, 50, 35))  # a Hippocampus-sized input: padded to 64^3, cropped back
    assert [tuple(o.shape[2:]) for o in outputs] == [(36, 50, 35), (18, 25, 18), (9, 12, 9), (4, 6, 4), (2, 3, 2)]
    assert len(network.deep_supervision_scales) == 5


def test_trainer_builds_the_dev_preset_on_plans_of_nnunets_own_network():
    from nnfm_trainers.nnfm_anatomix_dev_trainer import nnFMTrainer_anatomixDevTiny
    plain = SimpleNamespace(configuration={}, network_arch_class_name=
                            "dynamic_network_architectures.architectures.unet.PlainConvUNet")
    network = nnFMTrainer_anatomixDevTiny.build_network_architecture(None, plain, 1, 3, True)
    assert network.encoder.num_downs == 5 and network.encoder.model[0].out_channels == 4
    assert isinstance(network.encoder.model[1], nn.InstanceNorm3d)


def test_planner_memory_estimate_builds_the_dev_preset():
    from nnfm_planners.nnfm_planner import nnFMPlanner
    planner = SimpleNamespace(network_class=AnatomixSegmentationNetwork, network_kwargs=DEV_ENTRY.kwargs())
    estimate = nnFMPlanner.estimate(planner, [64, 64, 64], 1, 3)
    heads = sum(c * 3 + 3 for c in (32, 64, 128, 256, 512))  # 1x1x1 heads: dense output + four decoder levels
    assert estimate.parameter_elements == 94369568 + heads
    assert estimate.activation_elements_per_sample > 0


@pytest.mark.e2e
def test_full_dev_preset_plans_with_an_estimate_that_counts_its_94m_parameters(plan_hippocampus):
    """Planned only (--no_pp); the tiny dev preset's planning, training and prediction through nnU-Net's CLIs:
    tests/test_tiny_presets_e2e.py."""
    full = plan_hippocampus("anatomix_dev_unet", "--no_pp")["configurations"]["3d_fullres"]
    assert full["patch_size"] == [64, 64, 64] and full["nnfm"]["weights"] == "anatomix-dev"
    assert full["nnfm"]["estimated_training_memory_gb"] > 3 * 4 * 94369568 / 1024 ** 3
