"""PrimusV2 / V3 presets and anatomix-dev-vit: network = dynamic-network-architectures' PrimusV2 / V3 parts,
strict loading of the published anatomix-dev-vit layout, position-embedding resizing with register rows, stem
channel adaptation, family detection next to nnssl's Primus-M, and planning. The tiny preset's nnUNetv2_train /
nnUNetv2_predict, from a file in anatomix-dev-vit's format: tests/test_tiny_presets_e2e.py."""
import json

import pytest
import torch
from dynamic_network_architectures.building_blocks.patch_encode_decode import PatchDecode
from torch import nn

from conftest import LAYOUTS, layout_keys, published_checkpoint_from_layout, run_cli
from nnfm.errors import (ChannelMismatchError, CheckpointMismatchError, ConfigurationError, PatchSizeError,
                         WrongCheckpointFamilyError)
from nnfm.networks.primus_v2_segmentation import PRIMUS_V2_PRESETS, PrimusV2Encoder, PrimusV2SegmentationNetwork
from nnfm.weights import load_pretrained
from nnfm.weights.families import detect_family
from nnfm.weights.filters_primus_v2 import STEM_KEY

LAYOUT = LAYOUTS / "anatomix_dev_vit.json"
ANATOMIX = {k: v for k, v in PRIMUS_V2_PRESETS["anatomix_dev_vit"].items()
            if k not in ("num_aggregated_blocks", "input_norm")}
TINY = dict(embed_dim=48, depth=4, num_heads=2)
# the image-facing convolutions of the tokenizer's first residual block (each tensor under two names)
STEM_KEYS = {STEM_KEY, "down_projection.stem.blocks.0.conv1.all_modules.0.weight",
             "down_projection.stem.blocks.0.skip.0.conv.weight", "down_projection.stem.blocks.0.skip.0.all_modules.0.weight"}


def _layout() -> dict:
    return {k: v["shape"] for k, v in layout_keys(json.loads(LAYOUT.read_text())).items()}


def _encoder_keys(layout: dict) -> dict:
    return {k: v for k, v in layout.items() if not k.startswith("up_projection.") and k != "mask_token"}


def _dna(version: str, input_shape, registers: int = 0, qk_norm: bool = False, channels: int = 1, classes: int = 3,
         **size):
    """dynamic-network-architectures' own PrimusV2 / PrimusV3 with anatomix's additions applied as anatomix does."""
    from dynamic_network_architectures.architectures.primus import PrimusV2, PrimusV3

    cls, extra = (PrimusV2, {}) if version == "v2" else (PrimusV3, {"ch_per_level": (8, 16, 32, 64)})
    size = size or TINY
    net = cls(channels, size["embed_dim"], (8, 8, 8), classes, eva_depth=size["depth"], eva_numheads=size["num_heads"],
              input_shape=tuple(input_shape), num_register_tokens=registers, init_values=0.1, scale_attn_inner=True,
              **extra)
    if qk_norm:  # neel-dey/anatomix anatomix/model/vit3d/architectures.py Primus.__init__
        head_dim = size["embed_dim"] // size["num_heads"]
        for block in net.eva.blocks:
            block.attn.q_norm, block.attn.k_norm = nn.LayerNorm(head_dim), nn.LayerNorm(head_dim)
    return net


def _tiny(input_shape=(16, 32, 32), channels=1, classes=3, **kwargs):
    kwargs = {**TINY, "num_register_tokens": 2, "qk_norm": True, **kwargs}
    return PrimusV2SegmentationNetwork(channels, classes, input_shape=input_shape, **kwargs)


def _tiny_anatomix_checkpoint(path, grid_side=4, channels=1, registers=2):
    """A tiny file in anatomix-dev-vit's format: the whole DNA PrimusV2 module (tokenizer, registers, eva,
    up-projection, mask token) as a bare state dict saved from torch.compile (``_orig_mod.`` prefix)."""
    torch.manual_seed(1)
    net = _dna("v2", [8 * grid_side] * 3, registers=registers, qk_norm=True, channels=channels)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, path)
    return path, state


# ---- network ------------------------------------------------------------------------------------
def test_dna_primus_v2_with_anatomix_kwargs_is_the_published_layout_and_our_encoder_its_encoder_part():
    layout = _layout()
    with torch.device("meta"):
        reference = _dna("v2", (128, 128, 128), registers=8, qk_norm=True, classes=32, embed_dim=396, depth=12, num_heads=6)
        encoder = PrimusV2Encoder(1, (128, 128, 128), **ANATOMIX)
    assert {k: list(v.shape) for k, v in reference.state_dict().items()} == layout
    assert {k: list(v.shape) for k, v in encoder.state_dict().items()} == _encoder_keys(layout)
    assert len(layout) == 411 and sum(torch.Size(s).numel() for s in layout.values()) == 27146528
    norms = [m for m in encoder.down_projection.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(m.eps == 1e-2 for m in norms)  # anatomix in_eps (DNA's default 1e-5)


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_aggregated_tokens_are_dna_primus_own_tokens_with_registers_removed(version):
    """Same weights in dynamic-network-architectures' PrimusV2 / V3: our last tokens = its Eva output minus the
    register tokens, and the intermediate ones its blocks' (normed) outputs."""
    torch.manual_seed(0)
    shape = (16, 32, 32)
    reference = _dna(version, shape, registers=2, qk_norm=True).eval()
    net = _tiny(shape, tokenizer=version, tokenizer_channels=(8, 16, 32, 64) if version == "v3" else None).eval()
    own = {k: v for k, v in reference.state_dict().items() if not k.startswith("up_projection.") and k != "mask_token"}
    net.encoder.load_state_dict(own, strict=True)
    captured, final = {}, {}
    for i, block in enumerate(reference.eva.blocks):
        block.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, out))
    reference.eva.register_forward_hook(lambda m, a, out: final.__setitem__("x", out[0]))
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        reference(x)
        tokens = net.encoder(x, net.block_indices)
    assert net.block_indices == [0, 1, 2, 3] and tokens[-1].shape == (2, 2 * 4 * 4, 48)
    torch.testing.assert_close(tokens[-1], final["x"][:, 2:], rtol=0, atol=0)
    for got, index in zip(tokens, net.block_indices):
        torch.testing.assert_close(got, reference.eva.norm(captured[index])[:, 2:], rtol=0, atol=0)


def test_output_is_full_resolution_window_applied_and_gradients_reach_stem_and_registers():
    net = _tiny(input_shape=(16, 32, 24), channels=2, input_norm="window01", input_window=[[-1, 1], [0, 2]])
    x = torch.randn(2, 2, 16, 32, 24)
    out = net(x)
    assert out.shape == (2, 3, 16, 32, 24) and net.num_tokens == 2 * 4 * 3
    out.mean().backward()
    assert net.encoder.down_projection.stem.blocks[0].conv1.conv.weight.grad.abs().sum() > 0
    assert net.encoder.register_tokens.grad.abs().sum() > 0
    # the window clips nnU-Net's units to each channel's [lower, upper] before the tokenizer: intensities below
    # the lower bounds reach the encoder exactly as the lower bounds do
    net.eval()
    below = torch.tensor([-5.0, -7.0]).view(1, 2, 1, 1, 1).expand(1, 2, 16, 32, 24)
    at_lower = torch.tensor([-1.0, 0.0]).view(1, 2, 1, 1, 1).expand(1, 2, 16, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(net(below), net(at_lower), rtol=0, atol=0)
        assert not torch.equal(net(below), net(at_lower + 1))


# ---- the published anatomix-dev-vit layout ----------------------------------------------------------------
def test_published_anatomix_dev_vit_loads_strictly_every_key_loaded_or_reported(tmp_path):
    state = published_checkpoint_from_layout(LAYOUT)
    path = tmp_path / "anatomix-dev-vit.pth"
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, path)  # as saved from a torch.compile'd model
    net = PrimusV2SegmentationNetwork(1, 4, input_shape=(128, 128, 128), **PRIMUS_V2_PRESETS["anatomix_dev_vit"])
    report = load_pretrained(net.encoder, path, family=("primus_v2",))
    assert report.ok and report.family == "primus_v2" and "prefix '_orig_mod.'" in report.unwrapped
    assert set(report.loaded) == set(_encoder_keys(_layout())) and not report.adapted
    assert set(report.loaded) | set(report.intentionally_dropped) == set(state)
    assert set(report.intentionally_dropped) == {k for k in state if k.startswith("up_projection.")} | {"mask_token"}
    assert all(report.intentionally_dropped.values())
    loaded = net.encoder.state_dict()
    for key in ("register_tokens", "eva.pos_embed", "eva.blocks.11.attn.k_norm.weight",
                "down_projection.final_proj.weight", STEM_KEY):
        assert torch.equal(loaded[key], state[key]), key


def test_pos_embed_is_resized_for_another_patch_with_register_rows_kept_and_a_ramp_stays_a_ramp(tmp_path):
    """16^3 pretraining grid -> the 5x7x5 grid of a 40x56x40 patch; the 8 register rows are not resampled.
    A linear ramp over the old grid must come out as the same ramp at the new token centres (align_corners=False:
    new token i sits at old coordinate (i + 0.5) * old / new - 0.5); swapped axes or register rows resampled
    with the grid fail."""
    state = published_checkpoint_from_layout(LAYOUT)
    old, new, registers = [16, 16, 16], [5, 7, 5], 8
    coeffs = torch.randn(396, 3)

    def ramp(coordinates):
        axes = torch.meshgrid(*coordinates, indexing="ij")
        return (torch.stack([a.reshape(-1) for a in axes], dim=1) @ coeffs.T).unsqueeze(0)

    register_rows = state["eva.pos_embed"][:, :registers]
    state["eva.pos_embed"] = torch.cat([register_rows, ramp([torch.arange(g, dtype=torch.float32) for g in old])], 1)
    path = tmp_path / "anatomix-dev-vit.pth"
    torch.save(state, path)
    net = PrimusV2SegmentationNetwork(1, 4, input_shape=(40, 56, 40), **PRIMUS_V2_PRESETS["anatomix_dev_vit"])
    report = load_pretrained(net.encoder, path, family=("primus_v2",))
    assert report.ok and "16x16x16 -> 5x7x5" in report.adapted["eva.pos_embed"]
    loaded = net.encoder.state_dict()["eva.pos_embed"]
    assert loaded.shape == (1, registers + 5 * 7 * 5, 396)
    assert torch.equal(loaded[:, :registers], register_rows)
    expected = ramp([(torch.arange(n) + 0.5) * o / n - 0.5 for o, n in zip(old, new)])
    torch.testing.assert_close(loaded[:, registers:], expected, rtol=0, atol=1e-4)
    assert net(torch.randn(1, 1, 40, 56, 40)).shape == (1, 4, 40, 56, 40)


def test_stem_channel_adaptation_covers_every_image_facing_convolution(tmp_path):
    path, state = _tiny_anatomix_checkpoint(tmp_path / "tiny.pth", grid_side=4)
    net = _tiny(input_shape=(32, 32, 32), channels=3)
    report = load_pretrained(net.encoder, path, family=("primus_v2",))
    assert report.ok and set(report.adapted) == STEM_KEYS  # same 4x4x4 grid: the position embedding is copied
    loaded = net.encoder.state_dict()
    for key in STEM_KEYS:
        assert report.adapted[key].startswith("1 -> 3")
        torch.testing.assert_close(loaded[key], state[key].repeat(1, 3, 1, 1, 1) / 3)
    assert net(torch.randn(1, 3, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_unmappable_stem_channels_are_refused(tmp_path):
    path, _ = _tiny_anatomix_checkpoint(tmp_path / "two_channel.pth", channels=2)
    with pytest.raises(ChannelMismatchError, match="2 -> 3 cannot be mapped"):
        load_pretrained(_tiny(input_shape=(32, 32, 32), channels=3).encoder, path, family=("primus_v2",))


def test_an_nnunet_primus_v3_checkpoint_gives_its_grid_through_its_plans(tmp_path):
    """nnU-Net's nnUNet_PrimusV3*_Trainer saves DNA's PrimusV3 under network_weights with its plans in init_args: the
    non-cubic 2x4x4 pretraining grid is read from the plans' patch, not guessed."""
    torch.manual_seed(0)
    donor = _dna("v3", (16, 32, 32))
    plans = {"configurations": {"3d_fullres": {"patch_size": [16, 32, 32]}}}
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": donor.state_dict(), "init_args": {"plans": plans, "configuration": "3d_fullres"},
                "trainer_name": "nnUNet_PrimusV3S_Trainer"}, path)
    net = _tiny(input_shape=(32, 32, 32), tokenizer="v3", tokenizer_channels=(8, 16, 32, 64), num_register_tokens=0,
                qk_norm=False)
    report = load_pretrained(net.encoder, path, family=("primus_v2",))
    assert report.ok and "2x4x4 -> 4x4x4" in report.adapted["eva.pos_embed"]
    assert any(k.startswith("down_projection.proj_to_tokens.") for k in report.loaded)
    assert set(report.intentionally_dropped) == {k for k in donor.state_dict()
                                                 if k.startswith("up_projection.") or k == "mask_token"}
    # a whole nnFM network (an nnU-Net checkpoint of it) gives its encoder back, decoder dropped
    again = tmp_path / "nnfm_v3.pth"
    torch.save({"network_weights": net.state_dict()}, again)
    report = load_pretrained(_tiny(input_shape=(32, 32, 32), tokenizer="v3", tokenizer_channels=(8, 16, 32, 64),
                                   num_register_tokens=0, qk_norm=False).encoder, again, family=("primus_v2",))
    assert report.ok and all(k.startswith("decoder.") for k in report.intentionally_dropped)


def test_detection_keeps_nnssl_primus_and_primus_v2_apart(tmp_path):
    def keys_only(layout_file):  # detection reads key names only
        return {k: torch.empty(0) for k in layout_keys(json.loads(layout_file.read_text()))}

    assert detect_family(keys_only(LAYOUT)) == "primus_v2"
    assert detect_family(keys_only(LAYOUTS / "nnssl_primus_m.json")) == "nnssl_primus"
    path, _ = _tiny_anatomix_checkpoint(tmp_path / "tiny.pth")
    from nnfm.networks.primus_segmentation import PrimusSegmentationNetwork
    primus_m_like = PrimusSegmentationNetwork(1, 3, input_shape=(32, 32, 32), **TINY)
    with pytest.raises(WrongCheckpointFamilyError, match="'primus_v2'.*needs 'nnssl_primus'"):
        load_pretrained(primus_m_like.encoder, path, family="nnssl_primus")


# ---- keep_up_projection: anatomix-dev-vit's pretrained output head and its dense features ------------------------
UP_SHAPES = {"up_projection.decode.0.0.weight": [396, 216, 2, 2, 2], "up_projection.decode.0.0.bias": [216],
             "up_projection.decode.0.1.weight": [216], "up_projection.decode.0.1.bias": [216],
             "up_projection.decode.1.0.weight": [216, 120, 2, 2, 2], "up_projection.decode.1.0.bias": [120],
             "up_projection.decode.1.1.weight": [120], "up_projection.decode.1.1.bias": [120],
             "up_projection.decode.2.weight": [120, 32, 2, 2, 2], "up_projection.decode.2.bias": [32]}


def _up_keys(keys) -> set:
    return {k for k in keys if k.startswith(("up_projection.", "encoder.up_projection."))}


def test_kept_up_projection_is_dna_patch_decode_with_the_published_keys_and_shapes():
    layout = _layout()
    with torch.device("meta"):
        encoder = PrimusV2Encoder(1, (128, 128, 128), **ANATOMIX, keep_up_projection=True)
    assert type(encoder.up_projection) is PatchDecode
    assert {k: list(v.shape) for k, v in encoder.state_dict().items()} == {k: v for k, v in layout.items()
                                                                            if k != "mask_token"}
    assert {k: v for k, v in layout.items() if k.startswith("up_projection.")} == UP_SHAPES


def test_published_anatomix_dev_vit_loads_its_up_projection_strictly_with_the_flag(tmp_path):
    state = published_checkpoint_from_layout(LAYOUT)
    path = tmp_path / "anatomix-dev-vit.pth"
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, path)
    net = PrimusV2SegmentationNetwork(1, 4, input_shape=(128, 128, 128), **PRIMUS_V2_PRESETS["anatomix_dev_vit"],
                                      keep_up_projection=True)
    report = load_pretrained(net.encoder, path, family=("primus_v2",))
    assert report.ok and not report.adapted and not report.missing and not report.unexpected
    assert set(report.loaded) == set(state) - {"mask_token"} and report.intentionally_dropped.keys() == {"mask_token"}
    assert _up_keys(report.loaded) == set(UP_SHAPES)  # every up_projection key loaded, none dropped
    loaded = net.encoder.state_dict()
    for key in UP_SHAPES:
        assert torch.equal(loaded[key], state[key]), key


def test_without_the_flag_the_up_projection_is_still_dropped_with_its_reason(tmp_path):
    path, state = _tiny_anatomix_checkpoint(tmp_path / "tiny.pth")
    report = load_pretrained(_tiny(input_shape=(32, 32, 32)).encoder, path, family=("primus_v2",))
    assert report.ok and not _up_keys(report.loaded)
    assert set(report.intentionally_dropped) == _up_keys(state) | {"mask_token"}
    assert all("keep_up_projection=True" in report.intentionally_dropped[k] for k in _up_keys(state))


def _tiny_dna_with_feature_head(version: str, path, shape):
    """A tiny DNA PrimusV2 / V3 with anatomix-dev-vit's 32-channel up_projection, saved as anatomix saves it."""
    torch.manual_seed(3)
    reference = _dna(version, shape, registers=2, qk_norm=True, classes=32, **TINY).eval()
    for name, param in reference.named_parameters():  # LayerNormNd / biases away from their ones / zeros init
        if name.startswith("up_projection.") and param.dim() == 1:
            param.data.normal_()
    torch.save({f"_orig_mod.{k}": v for k, v in reference.state_dict().items()}, path)
    return reference


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_dense_features_are_dna_primus_output_at_input_resolution(tmp_path, version):
    """Same weights (through the filter): ``dense_features`` = DNA's PrimusV2 / V3 forward ("none"), and that minus
    each channel's spatial mean with anatomix's out_norm "demean" (anatomix's own model output)."""
    shape = (16, 32, 24)
    path = tmp_path / f"tiny_{version}.pth"
    reference = _tiny_dna_with_feature_head(version, path, shape)
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        expected = reference(x)
    extra = {"tokenizer": version, "tokenizer_channels": (8, 16, 32, 64) if version == "v3" else None}
    for out_norm, want in (("none", expected), ("demean", expected - expected.mean(dim=(2, 3, 4), keepdim=True))):
        net = _tiny(shape, keep_up_projection=True, up_projection_out_norm=out_norm, **extra).eval()
        report = load_pretrained(net.encoder, path, family=("primus_v2",))
        assert report.ok and _up_keys(report.loaded) == _up_keys(reference.state_dict())
        assert report.intentionally_dropped.keys() == {"mask_token"}
        features = net.dense_features(x)
        assert features.shape == (2, 32, *shape) and net.dense_feature_channels == 32
        torch.testing.assert_close(features, want, rtol=1e-5, atol=1e-5)


def test_kept_head_feeds_the_classifier_and_trains_and_the_flag_off_network_is_unchanged():
    shape = (16, 32, 24)
    off, on = _tiny(shape), _tiny(shape, keep_up_projection=True)
    assert not _up_keys(off.state_dict()) and off.encoder.up_projection is None
    assert set(on.state_dict()) - set(off.state_dict()) == {f"encoder.up_projection.{k}"
                                                            for k in on.encoder.up_projection.state_dict()}
    before = off.decoder.out_channels_before_classifier
    assert off.decoder.seg_layers[0].in_channels == before and on.decoder.seg_layers[0].in_channels == before + 32
    with pytest.raises(ConfigurationError, match="keep_up_projection=True"):
        off.dense_features(torch.randn(1, 1, *shape))
    out = on(torch.randn(2, 1, *shape))
    assert out.shape == (2, 3, *shape)
    out.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in on.encoder.up_projection.parameters())
    assert on.encoder_layer_id("up_projection.decode.2.weight") == on.num_layers + 1
    with pytest.raises(ConfigurationError, match="up_projection_out_norm"):
        _tiny(shape, keep_up_projection=True, up_projection_out_norm="instance")


def test_nnfm_checkpoint_with_the_head_loads_either_way_and_a_class_head_is_refused(tmp_path):
    shape = (32, 32, 32)
    trained = tmp_path / "nnfm_kept.pth"
    torch.save({"network_weights": _tiny(shape, keep_up_projection=True).state_dict()}, trained)
    report = load_pretrained(_tiny(shape, keep_up_projection=True).encoder, trained, family=("primus_v2",))
    assert report.ok and _up_keys(report.loaded) and all(k.startswith("decoder.") for k in report.intentionally_dropped)
    report = load_pretrained(_tiny(shape).encoder, trained, family=("primus_v2",))
    assert report.ok and not _up_keys(report.loaded) and _up_keys(report.intentionally_dropped)
    # an nnU-Net Primus trainer's up_projection is a 3-class segmentation head, not the 32 feature channels
    path, _ = _tiny_anatomix_checkpoint(tmp_path / "three_classes.pth")
    with pytest.raises(CheckpointMismatchError, match="up_projection.decode.2.weight"):
        load_pretrained(_tiny(shape, keep_up_projection=True).encoder, path, family=("primus_v2",))


def test_feature_extraction_tiles_the_kept_features_over_a_volume():
    from nnfm.features.extract import sliding_window_features

    net = _tiny((16, 32, 24), keep_up_projection=True).eval()
    features = sliding_window_features(net, torch.randn(1, 20, 40, 30), (16, 32, 24), 0.5, torch.device("cpu"),
                                       progress=False)
    assert features.shape == (32, 20, 40, 30) and torch.isfinite(features).all()


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_patches_and_kwargs_are_refused_with_a_fix():
    with pytest.raises(PatchSizeError, match="divisible by 8"):
        _tiny(input_shape=(12, 32, 36))
    with pytest.raises(PatchSizeError, match="at least 16|divisible by 8"):
        _tiny(input_shape=(8, 32, 32))
    with pytest.raises(PatchSizeError, match="built for patches of"):
        _tiny()(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ConfigurationError, match="input_norm"):
        _tiny(input_norm="imagenet")
    with pytest.raises(ConfigurationError, match="v3 tokenizer only"):
        _tiny(tokenizer_channels=(8, 16, 32, 64))
    with pytest.raises(ConfigurationError, match="rotary"):
        _tiny(embed_dim=40)


# ---- planning through nnU-Net's CLIs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def v2_plans(hippocampus, nnunet_env):
    # planned only (--no_pp): the tiny preset trains and predicts in tests/test_tiny_presets_e2e.py
    for encoder in ("anatomix_dev_vit_tiny", "anatomix_dev_vit", "primus_v3_s"):
        run_cli(["nnFM_plan_and_preprocess", "-d", hippocampus["id"], "-e", encoder, "-np", 1, "--no_pp"], nnunet_env)
    return {name: json.loads((hippocampus["preprocessed"] / f"nnFMPlans_{name}.json").read_text())["configurations"]
            ["3d_fullres"] for name in ("anatomix_dev_vit_tiny", "anatomix_dev_vit", "primus_v3_s")}


@pytest.mark.e2e
def test_plans_carry_the_preset_token_grid_and_each_input_convention(v2_plans):
    for name, config in v2_plans.items():
        arch = config["architecture"]
        assert arch["network_class_name"] == "nnfm.networks.primus_v2_segmentation.PrimusV2SegmentationNetwork"
        assert all(p % 8 == 0 and p >= 16 for p in config["patch_size"])
        assert arch["arch_kwargs"]["input_shape"] == config["patch_size"] and config["batch_size"] >= 2
        assert config["normalization_schemes"] == ["ZScoreNormalization"]  # nnU-Net's choice for MRI
    # Hippocampus' median image (about 36x50x35 voxels) rounded up to multiples of 8
    assert v2_plans["anatomix_dev_vit_tiny"]["patch_size"] == [40, 56, 40]
    anatomix = v2_plans["anatomix_dev_vit"]["architecture"]["arch_kwargs"]
    assert anatomix["input_norm"] == "window01" and len(anatomix["input_window"]) == 1
    assert anatomix["num_register_tokens"] == 8 and anatomix["qk_norm"] is True
    assert v2_plans["anatomix_dev_vit"]["nnfm"]["weights"] == "anatomix-dev-vit"
    v3 = v2_plans["primus_v3_s"]["architecture"]["arch_kwargs"]
    assert v3["tokenizer"] == "v3" and v3["embed_dim"] == 396 and v3["input_norm"] == "nnunet"
    assert "input_window" not in v3 and v2_plans["primus_v3_s"]["nnfm"]["weights"] == "random"
