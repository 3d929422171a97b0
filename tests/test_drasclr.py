"""DrasCLR: the authors' encoder layout loads strictly, location-conditioned convolutions mix experts as the authors'
CondConv3D does, the location follows the cell's position in the tile, and the HU convention. The tiny preset's
nnUNetv2_train + nnUNetv2_predict on real Hippocampus MRI (from a file in train.py's format) is in
tests/test_tiny_presets_e2e.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import LAYOUTS, published_checkpoint_from_layout
from nnfm.errors import (ChannelMismatchError, ConfigurationError, PatchSizeError, WeightsUnavailableError)
from nnfm.networks.drasclr import (CondConv3d, DrasCLREncoder, DrasCLRSegmentationNetwork, tile_location_grid)
from nnfm.registry import get_encoder
from nnfm.weights import WeightsEntry, load_pretrained, register_weights
from nnfm.weights.checkpoint_io import read_state_dict
from nnfm.weights.families import detect_family
from nnfm.weights.registry import unregister_weights

DRASCLR = LAYOUTS / "drasclr_encoder.json"
TINY = get_encoder("drasclr_tiny").kwargs()


def _published(tmp_path):
    path = tmp_path / "checkpoint_0002.pth.tar"
    checkpoint = published_checkpoint_from_layout(DRASCLR)
    torch.save(dict(checkpoint, epoch=2, arch="custom", optimizer={"state": {}, "param_groups": []}), path)
    return path, checkpoint["state_dict"]


def _authors_condconv(conv: CondConv3d, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """DrasCLR condconv3d.py CondConv3D.forward, written out: per sample, sigmoid(fc(loc)) mixes the experts."""
    out = []
    for i in range(x.shape[0]):
        routing = torch.sigmoid(conv._routing_fn.fc(loc[i].flatten()))
        kernel = (routing[:, None, None, None, None, None] * conv.weight).sum(0)
        out.append(F.conv3d(x[i:i + 1], kernel, conv.bias, conv.stride, 1))
    return torch.cat(out)


# ---- checkpoint -----------------------------------------------------------------------------------------
def test_published_ddp_checkpoint_loads_strictly_every_key_loaded_or_dropped_with_a_reason(tmp_path):
    path, state = _published(tmp_path)
    assert detect_family(read_state_dict(path)[0]) == "drasclr"
    net = DrasCLRSegmentationNetwork(1, 3)
    report = load_pretrained(net.encoder, path, family="drasclr")
    assert report.ok and not report.adapted and report.family == "drasclr"
    assert "['state_dict']" in report.unwrapped and "prefix 'module.'" in report.unwrapped
    assert len(report.loaded) == 117 and sum(v.numel() for v in net.encoder.state_dict().values()) == 8230477
    accounted = {f"module.encoder_q.{k}" for k in report.loaded} | {f"module.{k}" for k in report.intentionally_dropped}
    assert accounted == set(state)  # every published key: loaded, or dropped on purpose
    dropped = report.intentionally_dropped
    assert {k for k in dropped if k.startswith("encoder_k.")} == {k[7:] for k in state if ".encoder_k." in k}
    assert {"queue", "queue_ptr", "encoder_q.fc.0.weight", "encoder_q.fc.2.bias"} <= set(dropped)
    assert "momentum" in dropped["encoder_k.conv1.weight"] and "queue" in dropped["queue"] \
        and "projection head" in dropped["encoder_q.fc.0.weight"]
    for key in ("conv1.weight", "downsample2.conv3._routing_fn.fc.weight", "bn4.running_var"):
        assert torch.equal(net.encoder.state_dict()[key], state[f"module.encoder_q.{key}"]), key


def test_stem_adapts_one_channel_to_three_with_the_same_response(tmp_path):
    path, _ = _published(tmp_path)
    one, three = DrasCLREncoder(1).eval(), DrasCLREncoder(3).eval()
    load_pretrained(one, path, family="drasclr")
    report = load_pretrained(three, path, family="drasclr")
    assert report.adapted == {"conv1.weight": "1 -> 3 (repeat / 3)"}
    x, loc = torch.randn(1, 1, 32, 32, 32), torch.tensor([[0.2, -0.5, 0.7]])
    with torch.no_grad():
        torch.testing.assert_close(three(x.repeat(1, 3, 1, 1, 1), loc)[-1], one(x, loc)[-1], rtol=1e-4, atol=1e-5)


def test_two_channel_stem_into_three_channels_is_refused(tmp_path):
    two = DrasCLREncoder(2, **{k: TINY[k] for k in ("widths", "rep_dim", "num_experts")})
    path = tmp_path / "two.pth"
    torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in two.state_dict().items()}}, path)
    # the fix names DrasCLR's own scratch trainer (it named the anatomix U-Net's nnFMTrainer_scratch for every encoder)
    with pytest.raises(ChannelMismatchError,
                       match="2 input channel.*dataset has 3.*-tr nnFMTrainer_DrasCLR_scratch\\)"):
        load_pretrained(DrasCLREncoder(3, **{k: TINY[k] for k in ("widths", "rep_dim", "num_experts")}), path,
                        family="drasclr")


def test_bare_encoder_and_nnfm_network_checkpoints_load_too(tmp_path):
    kwargs = {k: TINY[k] for k in ("widths", "rep_dim", "num_experts")}
    bare = dict(DrasCLREncoder(1, **kwargs).state_dict(), **{"fc.weight": torch.zeros(16, 16)})  # authors' Encoder
    torch.save(bare, tmp_path / "bare.pth")
    report = load_pretrained(DrasCLREncoder(1, **kwargs), tmp_path / "bare.pth", family="drasclr")
    assert report.ok and list(report.intentionally_dropped) == ["fc.weight"]
    network = DrasCLRSegmentationNetwork(1, 4, **TINY)
    torch.save({"network_weights": network.state_dict()}, tmp_path / "nnunet.pth")
    report = load_pretrained(DrasCLRSegmentationNetwork(1, 2, **TINY).encoder, tmp_path / "nnunet.pth",
                             family="drasclr")
    assert report.ok and report.intentionally_dropped \
        and all(k.startswith("decoder.") for k in report.intentionally_dropped)


def test_a_web_page_instead_of_the_checkpoint_is_refused_with_instructions(tmp_path, monkeypatch):
    page = tmp_path / "drive.html"
    page.write_text("<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses.</body></html>")
    monkeypatch.setenv("nnFM_weights_cache", str(tmp_path / "cache"))
    register_weights(WeightsEntry("drasclr_page_test", "drasclr", page.as_uri(), None, "x.pth.tar", "put it there",
                                  "-", "-"))
    try:
        with pytest.raises(WeightsUnavailableError, match="(?s)answered with a web page.*put it at"):
            load_pretrained(DrasCLREncoder(1), "drasclr_page_test", family="drasclr")
        assert not list((tmp_path / "cache").glob("*"))  # nothing half-downloaded left in the cache
    finally:
        unregister_weights("drasclr_page_test")


# ---- location-conditioned convolution ------------------------------------------------------------------
def test_condconv_is_the_authors_per_sample_expert_mixture_for_one_location_and_for_a_grid():
    torch.manual_seed(0)
    conv = CondConv3d(3, 5, num_experts=4, num_coordinates=1, stride=2)
    x, loc = torch.randn(2, 3, 16, 16, 16), torch.rand(2, 3) * 2 - 1
    expected = _authors_condconv(conv, x, loc)
    torch.testing.assert_close(conv(x, loc), expected, rtol=1e-5, atol=1e-5)
    # a grid with the same location in every cell gives the same output
    torch.testing.assert_close(conv(x, loc[:, :, None, None, None].expand(-1, -1, 2, 2, 2)), expected,
                               rtol=1e-5, atol=1e-5)
    # a grid with two locations: each half of the output is the authors' layer at that half's location
    other = torch.rand(2, 3) * 2 - 1
    grid = torch.stack([loc, other], dim=2)[..., None, None]  # (B, 3, 2, 1, 1): two cells along the first axis
    out = conv(x, grid)
    torch.testing.assert_close(out[:, :, :4], expected[:, :, :4], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, :, 4:], _authors_condconv(conv, x, other)[:, :, 4:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, :, 4:], expected[:, :, 4:], atol=1e-3)


def test_location_grid_is_the_cell_centres_in_drasclr_xyz_order():
    grid = tile_location_grid((64, 96, 32), batch=2)
    assert grid.shape == (2, 3, 2, 3, 1)
    # channel 0 is x = nnU-Net's last axis, channel 2 is z = the first axis
    assert torch.equal(grid[0, 2, :, 0, 0], torch.tensor([-0.5, 0.5]))
    assert torch.allclose(grid[0, 1, 0, :, 0], torch.tensor([-2 / 3, 0.0, 2 / 3]))
    assert torch.equal(grid[0, 0], torch.zeros(2, 3, 1))
    assert torch.equal(tile_location_grid((32, 32, 32))[0, :, 0, 0, 0], torch.zeros(3))
    with pytest.raises(ValueError, match="multiple of 32"):
        tile_location_grid((40, 32, 32))


def test_the_location_reaching_the_encoder_changes_with_the_cell_position():
    torch.manual_seed(0)
    net = DrasCLRSegmentationNetwork(1, 2, False, **TINY).eval()
    seen = []
    net.encoder.conv4._routing_fn.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        net(torch.randn(1, 1, 64, 32, 96))
    # one location per 32^3 cell (2 x 1 x 3 cells), as (cells..., xyz) rows: all different
    locations = seen[0].reshape(-1, 3)
    assert seen[0].shape == (1, 2, 1, 3, 3) and len({tuple(r.tolist()) for r in locations}) == 6
    torch.testing.assert_close(seen[0], tile_location_grid((64, 32, 96)).movedim(1, -1))
    # the same 32^3 patch at another location gives another representation; the default for a single-cell
    # tile is location (0, 0, 0)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        centre, corner = (net.dense_features(x), net._encode(x, torch.tensor([[0.9, 0.9, -0.9]]))[1][-1])
        default = net._encode(x, None)[1][-1]
        explicit = net._encode(x, torch.zeros(1, 3))[1][-1]
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, corner, atol=1e-4)
    assert centre.shape == (1, 16, 32, 32, 32)


def test_outputs_deep_supervision_and_padding():
    net = DrasCLRSegmentationNetwork(2, 3, True, **TINY)
    out = net(torch.randn(2, 2, 40, 32, 50))  # padded to 64 x 32 x 64 inside, cropped back
    assert [tuple(o.shape[2:]) for o in out] == [(40, 32, 50), (20, 16, 25), (10, 8, 12), (5, 4, 6), (2, 2, 3)]
    assert net.deep_supervision_scales == [[1 / 2 ** i] * 3 for i in range(5)]
    out[0].mean().backward()
    assert net.encoder.conv1.weight.grad.abs().sum() > 0 and net.encoder.conv1._routing_fn.fc.weight.grad is not None
    assert not any(k.startswith("decoder.encoder") for k in net.state_dict())  # the encoder is stored once


# ---- input convention ---------------------------------------------------------------------------------
def test_ct_hounsfield_units_reach_the_encoder_as_the_authors_scale_them():
    """Raw HU (CT planned with nnU-Net's NoNormalization) -> the planned HU window -> network = the authors'
    np.clip(HU, -1024, 240) -> (HU + 1024) / 632 - 1 (data/copd_patch.py), whatever the labels cover.

    Before issue 26 CT went through CTNormalization, which clips to the labelled foreground's 0.5 / 99.5 HU
    percentiles first: on lung CT whose labels exclude parenchyma (here airway walls / vessels, 0.5 % at -100 HU),
    air (-1000) and lung (-850) reached the encoder as the same saturated value."""
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import NoNormalization

    from nnfm.weights.input_convention import planned_convention
    from nnfm_planners.nnfm_drasclr_planner import nnFMDrasCLRPlanner

    planner = nnFMDrasCLRPlanner.__new__(nnFMDrasCLRPlanner)
    entry = get_encoder("drasclr")
    planner.__dict__.update(dataset_json={"channel_names": {"0": "CT"}}, entry=entry,
                            network_kwargs=entry.kwargs(), input_convention=planned_convention(entry, entry.weights),
                            dataset_fingerprint={"median_relative_size_after_cropping": 1.0, **LUNG_FINGERPRINT})
    schemes, use_mask = planner.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
    assert schemes == ["NoNormalization"] and use_mask == [False]
    kwargs = planner.architecture_kwargs([32, 32, 32], schemes, use_mask)
    hu = np.array([-1100, -1000, -850, -392, -100, 0, 240, 600], dtype=np.float32)
    preprocessed = NoNormalization(intensityproperties=LUNG_FINGERPRINT["foreground_intensity_properties_per_channel"]
                                   ["0"]).run(hu.copy())
    net = DrasCLRSegmentationNetwork(1, 2, **TINY, input_window=kwargs["input_window"])
    encoder_input = net.input_window(torch.from_numpy(preprocessed).view(1, 1, -1, 1, 1)) * 2 - 1
    authors = (np.clip(hu, -1024, 240) + 1024) / 632 - 1
    np.testing.assert_allclose(encoder_input.flatten().numpy(), authors, atol=1e-6)
    assert encoder_input.flatten()[1] < encoder_input.flatten()[2]  # air and lung stay apart


# labelled foreground of a lung CT whose labels exclude the parenchyma (airways, vessels): nnU-Net's fingerprint
LUNG_FINGERPRINT = {"foreground_intensity_properties_per_channel": {"0": {
    "mean": 60.0, "std": 120.0, "percentile_00_5": -100.0, "percentile_99_5": 400.0, "min": -300.0, "max": 900.0,
    "median": 50.0}}}


# ---- bad input ------------------------------------------------------------------------------------------
def test_bad_configurations_are_refused():
    with pytest.raises(ConfigurationError, match="num_coordinates=2"):
        DrasCLREncoder(1, num_coordinates=2)
    with pytest.raises(PatchSizeError, match=r"divisible by 32.*\[64, 32, 32\]"):
        DrasCLRSegmentationNetwork(1, 2, pad_to_stride=False, **TINY)(torch.randn(1, 1, 40, 32, 32))
