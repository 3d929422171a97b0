"""3D Primus ViT path: network, nnssl Primus-M checkpoint loading, pos-embed resizing, memory model, bad input and
planning. The tiny preset's nnUNetv2_train / nnUNetv2_predict on real Hippocampus MRI, from a file in nnssl's release
format: tests/test_tiny_presets_e2e.py."""
import gc
import json

import pytest
import torch

from conftest import LAYOUTS, random_state_dict_from_layout
from nnfm.errors import (ChannelMismatchError, CheckpointMismatchError, ConfigurationError, PatchSizeError,
                         WrongCheckpointFamilyError)
from nnfm.networks.primus_segmentation import PRIMUS_PRESETS, PrimusEncoder, PrimusSegmentationNetwork
from nnfm.planning.vit_memory import count_vit_activation_elements, estimate_vit_training_memory
from nnfm.weights import load_pretrained
from nnfm.weights.pos_embed import resize_pos_embed_3d

NNSSL = LAYOUTS / "nnssl_primus_m.json"
TINY = dict(embed_dim=48, depth=4, num_heads=2)


def _tiny_net(input_shape=(16, 32, 32), channels=1, classes=3, **kwargs):
    return PrimusSegmentationNetwork(channels, classes, input_shape=input_shape, **{**TINY, **kwargs})


def _nnssl_wrap(state: dict) -> dict:
    """How nnssl releases a checkpoint (add_adaptation_plan.py): weights + adaptation plan + trainer info."""
    plan = {"architecture_plans": {"arch_class_name": "PrimusM"}, "pretrain_num_input_channels": 1,
            "key_to_encoder": "eva", "key_to_stem": "down_projection", "keys_to_in_proj": ["down_projection.proj"],
            "key_to_lpe": "eva.pos_embed", "recommended_downstream_patchsize": [160, 160, 160]}
    return {"network_weights": state, "nnssl_adaptation_plan": plan, "trainer_name": "BaseEvaMAETrainer",
            "init_args": {"plan": "x"}}


def tiny_nnssl_checkpoint(path, grid_side=4, channels=1):
    """A tiny MAE-style nnssl checkpoint: encoder on a cubic grid plus MAE-only keys."""
    encoder = PrimusEncoder(channels, [8 * grid_side] * 3, **TINY)
    state = dict(encoder.state_dict())
    state["mask_token"] = torch.zeros(1, 1, TINY["embed_dim"])
    state["decoder.blocks.0.norm1.weight"] = torch.ones(TINY["embed_dim"])
    state["up_projection.decode.0.0.weight"] = torch.zeros(TINY["embed_dim"], 8, 2, 2, 2)
    torch.save(_nnssl_wrap(state), path)
    return path, state


# ---- network ------------------------------------------------------------------------------------
def test_primus_m_encoder_has_exactly_the_nnssl_encoder_keys():
    layout = json.loads(NNSSL.read_text())["keys"]
    wanted = {k: v["shape"] for k, v in layout.items() if k.startswith(("down_projection.", "eva."))}
    with torch.device("meta"):
        encoder = PrimusEncoder(1, [160, 160, 160], **{k: PRIMUS_PRESETS["primus_m"][k]
                                                        for k in ("embed_dim", "depth", "num_heads")})
    assert {k: list(v.shape) for k, v in encoder.state_dict().items()} == wanted
    assert len(wanted) == 373 and sum(v.numel() for v in encoder.state_dict().values()) == 150997536


def test_aggregated_tokens_are_the_eva_blocks_own_outputs():
    """Same weights in dynamic_network_architectures' Primus: our tokens = its blocks' (normed) outputs."""
    from dynamic_network_architectures.architectures.primus import Primus

    torch.manual_seed(0)
    reference = Primus(1, 48, (8, 8, 8), 3, eva_depth=8, eva_numheads=2, input_shape=(16, 32, 32),
                       init_values=0.1, scale_attn_inner=True).eval()
    net = _tiny_net(depth=8).eval()
    assert net.block_indices == [1, 3, 5, 7]
    own = {k: v for k, v in reference.state_dict().items() if k.startswith(("down_projection.", "eva."))}
    net.encoder.load_state_dict(own, strict=True)
    captured = {}
    for i, block in enumerate(reference.eva.blocks):
        block.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, out))
    final = {}
    reference.eva.register_forward_hook(lambda m, a, out: final.__setitem__("x", out[0]))
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        reference(x)
        tokens = net.encoder(x, net.block_indices)
    for got, index in zip(tokens, net.block_indices):
        torch.testing.assert_close(got, reference.eva.norm(captured[index]), rtol=0, atol=0)
    torch.testing.assert_close(tokens[-1], final["x"], rtol=0, atol=0)  # last block = Eva's own forward output
    assert not torch.allclose(tokens[0], tokens[-1])


def test_output_is_full_resolution_and_gradients_reach_the_stem():
    net = _tiny_net(input_shape=(16, 32, 24), channels=2)
    out = net(torch.randn(2, 2, 16, 32, 24))
    assert out.shape == (2, 3, 16, 32, 24)
    out.mean().backward()
    assert net.encoder.down_projection.proj.weight.grad.abs().sum() > 0
    assert net.decoder.deep_supervision is False and net.num_tokens == 2 * 4 * 3


# ---- checkpoint ---------------------------------------------------------------------------------
def test_published_nnssl_primus_m_layout_loads_with_resized_pos_embed_and_reported_drops(tmp_path):
    """The one full-size test: Primus-M's 177M random values (~0.7 GB), freed afterwards."""
    state = random_state_dict_from_layout(NNSSL)
    path = tmp_path / "checkpoint_final.pth"
    torch.save(_nnssl_wrap(state), path)
    encoder = PrimusEncoder(2, [40, 56, 40], **{k: PRIMUS_PRESETS["primus_m"][k]
                                                for k in ("embed_dim", "depth", "num_heads")})
    report = load_pretrained(encoder, path, family="nnssl_primus")
    assert len(report.loaded) == 373 and report.ok
    dropped = report.intentionally_dropped
    assert set(dropped) == {k for k in state if not k.startswith(("down_projection.", "eva."))}
    assert "mask_token" in dropped and any(k.startswith("decoder.") for k in dropped) \
        and any(k.startswith("up_projection.") for k in dropped) and all(dropped.values())
    assert set(report.adapted) == {"eva.pos_embed", "down_projection.proj.weight"}
    assert "20x20x20 -> 5x7x5" in report.adapted["eva.pos_embed"]
    loaded = encoder.state_dict()
    assert torch.equal(loaded["eva.blocks.15.mlp.fc2.weight"], state["eva.blocks.15.mlp.fc2.weight"])
    assert torch.equal(loaded["eva.pos_embed"], resize_pos_embed_3d(state["eva.pos_embed"], [20] * 3, [5, 7, 5]))
    torch.testing.assert_close(loaded["down_projection.proj.weight"],
                               state["down_projection.proj.weight"].repeat(1, 2, 1, 1, 1) / 2)
    del state, encoder, loaded
    gc.collect()


def test_resizing_to_the_same_grid_is_the_identity():
    pos = torch.randn(1, 4 * 5 * 6, 8)
    assert torch.equal(resize_pos_embed_3d(pos, [4, 5, 6], [4, 5, 6]), pos)


def test_resizing_keeps_a_linear_ramp_linear_on_every_axis():
    """Trilinear resampling reproduces a linear function of the token position exactly (align_corners=False:
    new token i sits at old coordinate (i + 0.5) * old / new - 0.5). Swapped axes or another alignment fail."""
    old, new = [20, 20, 20], [5, 7, 3]
    coeffs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.3, -0.7, 0.2]])  # (D, 3)

    def ramp(grid, coordinates):
        axes = torch.meshgrid(*coordinates, indexing="ij")
        positions = torch.stack([a.reshape(-1) for a in axes], dim=1)  # row-major (x, y, z)
        return (positions @ coeffs.T).unsqueeze(0)

    pos = ramp(old, [torch.arange(g, dtype=torch.float32) for g in old])
    expected = ramp(new, [(torch.arange(n) + 0.5) * o / n - 0.5 for o, n in zip(old, new)])
    resized = resize_pos_embed_3d(pos, old, new)
    assert resized.shape == (1, 5 * 7 * 3, 4)
    torch.testing.assert_close(resized, expected, rtol=0, atol=1e-4)


def test_tiny_nnssl_checkpoint_into_a_network_on_another_grid(tmp_path):
    path, state = tiny_nnssl_checkpoint(tmp_path / "tiny.pth", grid_side=4)
    net = _tiny_net(input_shape=(16, 40, 24), channels=3)
    report = load_pretrained(net.encoder, path, family="nnssl_primus")
    assert report.ok and "4x4x4 -> 2x5x3" in report.adapted["eva.pos_embed"]
    assert report.adapted["down_projection.proj.weight"].startswith("1 -> 3")
    assert set(report.intentionally_dropped) == {"mask_token", "decoder.blocks.0.norm1.weight",
                                                 "up_projection.decode.0.0.weight"}
    assert net(torch.randn(1, 3, 16, 40, 24)).shape == (1, 3, 16, 40, 24)
    # a whole nnFM Primus network (e.g. an nnU-Net checkpoint of it) also gives its encoder
    donor = tmp_path / "nnfm_primus.pth"
    torch.save({"network_weights": net.state_dict()}, donor)
    again = _tiny_net(input_shape=(16, 40, 24), channels=3)
    report = load_pretrained(again.encoder, donor, family="nnssl_primus")
    assert report.ok and not report.adapted and all(k.startswith(("decoder.decode.", "decoder.seg_layers.")) for k in report.intentionally_dropped)


# ---- memory -------------------------------------------------------------------------------------
def test_memory_count_has_an_n_squared_term_only_for_math_attention():
    """Per block the count is c + a*N + q*N^2; fitted on three grids, q = heads (math) and 0 (fused)."""
    heads = TINY["num_heads"]

    def per_block(shape, attention):
        counts = [count_vit_activation_elements(_tiny_net(input_shape=shape, depth=d, num_aggregated_blocks=1),
                                                (1, 1, *shape), attention) for d in (1, 2)]
        return counts[1] - counts[0]

    shapes = [(32, 32, 32), (64, 64, 64), (64, 64, 128)]
    tokens = torch.tensor([(s[0] // 8) * (s[1] // 8) * (s[2] // 8) for s in shapes], dtype=torch.float64)
    design = torch.stack([torch.ones(3, dtype=torch.float64), tokens, tokens ** 2], dim=1)
    for attention, expected in (("math", heads), ("fused", 0)):
        counts = torch.tensor([per_block(s, attention) for s in shapes], dtype=torch.float64)
        assert torch.linalg.solve(design, counts)[2].item() == pytest.approx(expected, abs=1e-6)

    def build():
        with torch.device("meta"):
            return _tiny_net(input_shape=(64, 64, 64))
    math = estimate_vit_training_memory(build, 1, (64, 64, 64), 2, "math", patch=8)
    fused = estimate_vit_training_memory(build, 1, (64, 64, 64), 2, "fused", patch=8)
    assert math.tokens == 512 and math.attention_matrix_elements == TINY["depth"] * heads * 512 ** 2
    # the two counts differ by the N x N term, less the O(N) tensors only the fused kernel keeps (out, logsumexp)
    difference = math.activation_elements_per_sample - fused.activation_elements_per_sample
    assert 0.9 * math.attention_matrix_elements <= difference <= math.attention_matrix_elements
    assert fused.parameter_bytes == 16 * fused.parameter_elements  # AdamW: weights, grads, two moments


# ---- bad input ----------------------------------------------------------------------------------
def test_patch_not_divisible_by_8_is_refused_with_a_fix():
    with pytest.raises(PatchSizeError, match=r"divisible by 8.*\[16, 32, 40\]"):
        _tiny_net(input_shape=(12, 32, 36))


def test_input_of_another_size_than_the_patch_is_refused():
    with pytest.raises(PatchSizeError, match="built for patches of"):
        _tiny_net(input_shape=(16, 32, 32))(torch.randn(1, 1, 32, 32, 32))


def test_head_width_incompatible_with_3d_rope_is_refused():
    with pytest.raises(ConfigurationError, match="rotary"):
        _tiny_net(embed_dim=40, num_heads=2)


def test_anatomix_checkpoint_into_primus_is_the_wrong_family(tmp_path):
    path = tmp_path / "anatomix.pth"
    torch.save(random_state_dict_from_layout(LAYOUTS / "anatomix_unet.json"), path)
    with pytest.raises(WrongCheckpointFamilyError, match="anatomix_unet.*nnssl_primus"):
        load_pretrained(_tiny_net().encoder, path, family="nnssl_primus")


def test_unmappable_stem_channels_are_refused(tmp_path):
    path, _ = tiny_nnssl_checkpoint(tmp_path / "two_channel.pth", channels=2)
    with pytest.raises(ChannelMismatchError, match="2 -> 3 cannot be mapped"):
        load_pretrained(_tiny_net(channels=3).encoder, path, family="nnssl_primus")


def test_non_cubic_pretraining_grid_is_refused(tmp_path):
    state = dict(PrimusEncoder(1, [16, 24, 32], **TINY).state_dict())
    path = tmp_path / "odd.pth"
    torch.save(_nnssl_wrap(state), path)
    with pytest.raises(CheckpointMismatchError, match="not a cubic"):
        load_pretrained(_tiny_net(input_shape=(16, 16, 16)).encoder, path, family="nnssl_primus")


# ---- planning through nnU-Net's CLIs -------------------------------------------------------------------
@pytest.fixture(scope="module")
def primus_plans(plan_hippocampus):
    # primus_m is only planned (--no_pp): nothing trains it here
    return {"nnFMPlans_primus_tiny": plan_hippocampus("primus_tiny")["configurations"]["3d_fullres"],
            "nnFMPlans_primus_m": plan_hippocampus("primus_m", "--no_pp")["configurations"]["3d_fullres"]}


def test_primus_plans_patch_divisible_by_8_and_network_kwargs(primus_plans):
    for name, config in primus_plans.items():
        arch = config["architecture"]
        assert arch["network_class_name"] == "nnfm.networks.primus_segmentation.PrimusSegmentationNetwork"
        assert all(p % 8 == 0 for p in config["patch_size"]) and arch["arch_kwargs"]["input_shape"] == config["patch_size"]
        assert config["batch_size"] >= 2 and config["normalization_schemes"] == ["ZScoreNormalization"]
        assert "input_window" not in arch["arch_kwargs"]  # nnssl was pretrained on z-scored images, as nnU-Net gives
    assert primus_plans["nnFMPlans_primus_m"]["architecture"]["arch_kwargs"]["embed_dim"] == 864
    # Hippocampus' median image (about 36x50x35 voxels) rounded up to multiples of 8
    assert primus_plans["nnFMPlans_primus_tiny"]["patch_size"] == [40, 56, 40]
