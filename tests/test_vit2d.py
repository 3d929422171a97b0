"""The 2D ViT path (DINOv3 / MedDINOv3): network, checkpoint layouts, memory estimate, optimiser, pipeline."""
import json
import math

import pytest
import torch

from conftest import LAYOUTS, random_state_dict_from_layout, run_cli, train_and_predict
from nnfm.errors import (ChannelMismatchError, CheckpointMismatchError, ConfigurationError, PatchSizeError,
                         WrongCheckpointFamilyError)
from nnfm.networks.dinov3_segmentation import DINOv3SegmentationNetwork
from nnfm.weights import load_pretrained
from nnfm.weights.families import detect_family
from nnfm.weights.filters import VIT_FAMILIES, dinov3_key_map, meddinov3_key_map, meddinov3_primus_key_map

TINY = {"embed_dim": 32, "depth": 4, "num_heads": 2}
VIT_FAMILY_SET = ("meddinov3_vit", "dinov3_vit", "meddinov3_primus_nnunet", "nnfm_vit")


def tiny(input_channels=1, num_classes=3, vit="vit_base_patch16_dinov3", **kwargs):
    return DINOv3SegmentationNetwork(input_channels, num_classes, vit=vit, vit_kwargs=TINY, **kwargs)


def official_dinov3_state(layout: str = "dinov3_vits16.json") -> dict:
    """Random tensors in the official layout, with DINOv3's real bias_mask ([1, 0, 1] thirds)."""
    state = random_state_dict_from_layout(LAYOUTS / layout)
    for key in state:
        if key.endswith("bias_mask"):
            third = state[key].numel() // 3
            state[key] = torch.cat([torch.ones(third), torch.zeros(third), torch.ones(third)])
    return state


def _save(tmp_path, obj, name="weights.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


# ---- network ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 2, 4])
def test_any_channels_and_patch_multiple_of_16(channels):
    net = tiny(channels, 3).eval()
    out = net(torch.randn(2, channels, 64, 48))
    assert out.shape == (2, 3, 64, 48)
    assert net.aggregation_blocks == [0, 1, 2, 3]
    assert DINOv3SegmentationNetwork(1, 2, vit="vit_small_patch16_dinov3").aggregation_blocks == [2, 5, 8, 11]


def test_patch_not_divisible_by_16_names_the_fix():
    with pytest.raises(PatchSizeError, match=r"divisible by 16.*\[48, 48\]"):
        tiny()(torch.randn(1, 1, 40, 48))


def test_deep_supervision_is_refused_with_the_trainer_to_use():
    with pytest.raises(ConfigurationError, match="nnFMTrainer_MedDINOv3"):
        DINOv3SegmentationNetwork(1, 2, deep_supervision=True, vit_kwargs=TINY)


def test_input_window_must_match_the_channels():
    with pytest.raises(ValueError, match="re-run nnFM_plan_and_preprocess"):
        tiny(2, input_window=[[-1, 1]])


def test_attention_goes_through_fused_sdpa(monkeypatch):
    import torch.nn.functional as F

    calls = []
    original = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    tiny()(torch.randn(1, 1, 32, 32))
    assert len(calls) == TINY["depth"]


def test_mirroring_and_sliding_window_inputs_work():
    net = tiny().eval()
    x = torch.randn(1, 1, 32, 64)
    with torch.no_grad():
        assert net(torch.flip(x, (3,))).shape == net(x).shape == (1, 3, 32, 64)


# ---- checkpoints ----------------------------------------------------------------------------------
def test_official_dinov3_loads_strictly_and_tokens_equal_timms_own_intermediates(tmp_path):
    """ViT-S/16 official layout: every key loaded or dropped with a reason; timm's own loading agrees."""
    import timm
    from timm.models.eva import checkpoint_filter_fn

    state = official_dinov3_state()
    path = _save(tmp_path, state)
    net = DINOv3SegmentationNetwork(3, 2, vit="vit_small_patch16_dinov3_qkvb").eval()
    report = load_pretrained(net.encoder, path, family=VIT_FAMILY_SET)
    assert report.ok and report.family == "dinov3_vit"
    _, dropped, sources = dinov3_key_map(state)
    assert set(sources) | set(dropped) == set(state) and not set(sources) & set(dropped)  # no silent drop
    assert set(dropped) == {"mask_token"} | {f"blocks.{i}.attn.qkv.bias_mask" for i in range(12)}
    assert len(report.loaded) == 187 and "reg_token" in report.loaded  # storage tokens kept
    assert torch.equal(net.encoder.reg_token, state["storage_tokens"])

    # timm's own path: its checkpoint filter + the same RoPE periods
    reference = timm.create_model("vit_small_patch16_dinov3_qkvb", pretrained=False, num_classes=0).eval()
    reference.load_state_dict(checkpoint_filter_fn(dict(state), reference), strict=True)
    reference.rope.periods.copy_(state["rope_embed.periods"])
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        ours = net.aggregated_tokens(x)
        theirs = torch.cat(reference.forward_intermediates(x, indices=[2, 5, 8, 11], norm=True,
                                                           intermediates_only=True), dim=1)
    assert ours.shape == (2, 4 * 384, 4, 5)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)

    # the RGB stem summed to one channel gives the same tokens for a grey image repeated to RGB
    grey = DINOv3SegmentationNetwork(1, 2, vit="vit_small_patch16_dinov3_qkvb").eval()
    report = load_pretrained(grey.encoder, path, family=VIT_FAMILY_SET)
    assert report.adapted == {"patch_embed.proj.weight": "3 -> 1 (sum)"}
    g = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey.aggregated_tokens(g), net.aggregated_tokens(g.repeat(1, 3, 1, 1)),
                                   rtol=1e-4, atol=1e-4)


def test_meddinov3_teacher_loads_strictly_with_heads_dropped_and_bf16_periods(tmp_path):
    layout = json.loads((LAYOUTS / "meddinov3_vitb16.json").read_text())
    state = random_state_dict_from_layout(LAYOUTS / "meddinov3_vitb16.json")
    heads = {k: torch.zeros(v["shape"][:1] + [1] * (len(v["shape"]) - 1)) for k, v in
             layout["probable_extra_keys"].items()}  # shapes of the heads do not matter: they are dropped
    path = _save(tmp_path, {"teacher": dict(state, **heads)})
    net = DINOv3SegmentationNetwork(1, 5, vit="vit_base_patch16_dinov3")
    report = load_pretrained(net.encoder, path, family=VIT_FAMILY_SET)
    assert report.ok and report.family == "meddinov3_vit" and report.unwrapped == ["['teacher']"]
    _, dropped, sources = meddinov3_key_map(dict(state, **heads))
    assert set(sources) | set(dropped) == set(state) | set(heads)
    assert set(heads) <= set(dropped) and "backbone.mask_token" in dropped
    assert len(report.loaded) == 163
    # MedDINOv3's RoPE periods are bf16-rounded: the network uses the file's values, not timm's fp32 ones
    assert state["backbone.rope_embed.periods"].dtype == torch.bfloat16
    assert torch.equal(net.encoder.rope.periods, state["backbone.rope_embed.periods"].float())
    assert torch.equal(net.encoder.blocks[3].gamma_1, state["backbone.blocks.3.ls1.gamma"])


def test_meddinov3_nnunet_network_loads_its_encoder(tmp_path):
    state = random_state_dict_from_layout(LAYOUTS / "meddinov3_primus_multiscale_nnunet.json")
    path = _save(tmp_path, {"network_weights": state, "trainer_name": "meddinov3_base_primus_multiscale_Trainer"})
    net = DINOv3SegmentationNetwork(1, 4, vit="vit_base_patch16_dinov3")
    report = load_pretrained(net.encoder, path, family=VIT_FAMILY_SET)
    assert report.ok and report.family == "meddinov3_primus_nnunet"
    _, dropped, sources = meddinov3_primus_key_map(state)
    assert set(sources) | set(dropped) == set(state)
    assert {k for k in dropped if k.startswith("up_projection.")} == {k for k in state if k.startswith("up_projection.")}
    assert len(report.loaded) == 163


def test_detect_family_of_the_vit_layouts():
    assert detect_family(official_dinov3_state("dinov3_vitb16.json")) == "dinov3_vit"
    med = {"backbone." + k: v for k, v in tiny().encoder.state_dict().items()}
    assert detect_family(med) == "meddinov3_vit"
    assert detect_family(tiny().state_dict()) == "nnfm_vit"
    assert set(VIT_FAMILIES) == set(VIT_FAMILY_SET)


def test_wrong_family_and_wrong_variant_are_refused(tmp_path, anatomix_checkpoint):
    net = DINOv3SegmentationNetwork(1, 2, vit="vit_small_patch16_dinov3_qkvb")
    with pytest.raises(WrongCheckpointFamilyError, match="'anatomix_unet' checkpoint.*needs 'meddinov3_vit' or"):
        load_pretrained(net.encoder, anatomix_checkpoint, family=VIT_FAMILY_SET)
    # official DINOv3 (qkv bias) into the bias-free variant (MedDINOv3's): the biases and the fix are named
    path = _save(tmp_path, official_dinov3_state())
    no_bias = DINOv3SegmentationNetwork(1, 2, vit="vit_small_patch16_dinov3")
    with pytest.raises(CheckpointMismatchError, match="(?s)non-zero attention q/v biases.*blocks.0.attn.q_bias.*_qkvb"):
        load_pretrained(no_bias.encoder, path, family=VIT_FAMILY_SET)
    # all-zero biases (an export of a bias-free ViT) carry nothing: dropped, and the report says so
    zero = official_dinov3_state()
    for key in [k for k in zero if k.endswith("attn.qkv.bias")]:
        zero[key] = torch.zeros_like(zero[key])
    report = load_pretrained(no_bias.encoder, _save(tmp_path, zero), family=VIT_FAMILY_SET)
    assert report.adapted["blocks.0.attn.q_bias"].startswith("dropped: all zero")
    # a ViT-S file into a ViT-B network: shape mismatches listed
    base = DINOv3SegmentationNetwork(1, 2, vit="vit_base_patch16_dinov3_qkvb", vit_kwargs={"depth": 2})
    with pytest.raises(CheckpointMismatchError, match="(?s)shape mismatch"):
        load_pretrained(base.encoder, path, family=VIT_FAMILY_SET)


def test_non_zero_k_bias_is_refused(tmp_path):
    state = official_dinov3_state()
    state["blocks.0.attn.qkv.bias_mask"] = torch.ones_like(state["blocks.0.attn.qkv.bias_mask"])
    path = _save(tmp_path, state)
    net = DINOv3SegmentationNetwork(1, 2, vit="vit_small_patch16_dinov3_qkvb")
    with pytest.raises(CheckpointMismatchError, match="non-zero K bias"):
        load_pretrained(net.encoder, path, family=VIT_FAMILY_SET)


def test_stem_channels_that_cannot_be_mapped_are_refused(tmp_path):
    two = tiny(2)
    path = _save(tmp_path, {"network_weights": two.state_dict()})
    with pytest.raises(ChannelMismatchError, match="2 -> 3 cannot be mapped"):
        load_pretrained(tiny(3).encoder, path, family=VIT_FAMILY_SET)
    report = load_pretrained(tiny(1).encoder, path, family=VIT_FAMILY_SET)  # 2 -> 1: sum
    assert report.family == "nnfm_vit" and set(report.intentionally_dropped) == \
        {k for k in two.state_dict() if k.startswith("decoder.")}


def test_registry_has_the_vit_weights_with_honest_checksums():
    from nnfm.weights import get_weights_entry

    for name, prefix in (("dinov3_vits16", "08c60483"), ("dinov3_vitb16", "73cec8be")):
        entry = get_weights_entry(name)
        assert entry.family == "dinov3_vit" and entry.sha256 is None and entry.sha256_prefix == prefix
        assert entry.url.endswith(f"-{prefix}.pth") and entry.filename.endswith(f"-{prefix}.pth")
    entry = get_weights_entry("meddinov3_vitb16")
    assert entry.family == "meddinov3_vit" and entry.sha256 is None
    assert entry.url == "https://huggingface.co/ricklisz123/MedDINOv3-ViTB-16-CT-3M/resolve/main/model.pth"


def test_cached_file_with_wrong_sha256_prefix_is_refused(tmp_path, monkeypatch):
    from nnfm.errors import ChecksumMismatchError
    from nnfm.weights import resolve_checkpoint

    monkeypatch.setenv("nnFM_weights_cache", str(tmp_path))
    (tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth").write_bytes(b"not the published file")
    with pytest.raises(ChecksumMismatchError, match="prefix 08c60483"):
        resolve_checkpoint("dinov3_vits16")


# ---- memory estimate and optimisation ------------------------------------------------------------------
def test_memory_estimate_counts_attention_by_tokens():
    from nnfm.planning.vit_memory import estimate_vit_training_memory

    def estimate(size, attention):
        return estimate_vit_training_memory(lambda: tiny(), 1, (size, size), attention=attention)

    small, large = estimate(64, "math"), estimate(256, "math")
    assert large.tokens == 256 + 5 and large.attention_matrix_elements == 4 * 2 * large.tokens ** 2
    # the math path (CPU) saves the N x N attention probabilities; the fused GPU kernels do not
    assert large.activation_elements_per_sample - estimate(256, "fused").activation_elements_per_sample \
        >= 0.9 * large.attention_matrix_elements
    assert estimate(64, "fused").activation_elements_per_sample < small.activation_elements_per_sample * 1.1
    # views of weights (Linear saves W^T) are not activations: a 16-token patch costs far less than the weights
    assert estimate(64, "fused").activation_elements_per_sample < 20 * sum(p.numel() for p in tiny().parameters())
    assert large.parameter_bytes == 16 * large.parameter_elements  # AdamW: weights, grads, two moments


def test_param_groups_layer_decay_and_no_weight_decay():
    from nnfm.training.schedule import FineTuneSchedule
    from nnfm.training.vit_optimization import build_adamw, vit_param_groups

    net = tiny()
    groups = vit_param_groups(net, net.encoder, 1e-4, 3e-4, 0.05, layer_decay=0.5, depth=4,
                              layer_id_fn=net.encoder_layer_id)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    by_layer = {g["layer_id"]: g["lr"] for g in groups if g["is_encoder"]}
    assert by_layer[5] == pytest.approx(1e-4) and by_layer[4] == pytest.approx(5e-5) and \
        by_layer[0] == pytest.approx(1e-4 * 0.5 ** 5)
    assert all(g["lr"] == 3e-4 for g in groups if not g["is_encoder"])
    names = {id(p): n for n, p in net.named_parameters()}
    for g in groups:
        for p in g["params"]:
            if p.ndim <= 1 or "token" in names[id(p)]:
                assert g["weight_decay"] == 0.0, names[id(p)]
    optimizer = build_adamw(groups, 3e-4)
    assert optimizer.defaults["betas"] == (0.9, 0.98)
    schedule = FineTuneSchedule.from_fractions(100, 0.0, 0.05)
    assert [schedule.lr_factor(e, True) for e in (0, 4)] == [0.2, 1.0]
    assert schedule.lr_factor(5, False) == 1.0 and schedule.lr_factor(99, True) < 0.02
    assert FineTuneSchedule.from_fractions(1, 0.0, 0.05).lr_factor(0, True) == 1.0  # smoke budgets: no warm-up
    assert math.isclose(FineTuneSchedule(10, decay="cosine").lr_factor(5, True), 0.5)


# ---- pipeline: plan, train, predict through nnU-Net's CLIs ------------------------------------------------
PLANS = "nnFMPlans_meddinov3_vitb16"


def tiny_meddinov3_checkpoint(path):
    """A MedDINOv3-format file ({'teacher': backbone.* + heads}, DINOv3 names) for the tiny ViT."""
    encoder = DINOv3SegmentationNetwork(3, 2, vit_kwargs=TINY).encoder
    rename = {"reg_token": "storage_tokens", "rope.periods": "rope_embed.periods"}
    state = {}
    for key, value in encoder.state_dict().items():
        key = rename.get(key, key.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma"))
        state["backbone." + key] = value.clone()
    state["backbone.mask_token"] = torch.zeros(1, TINY["embed_dim"])
    state["dino_head.last_layer.weight"] = torch.zeros(8, 4)
    torch.save({"teacher": state}, path)
    return path


@pytest.fixture(scope="module")
def vit_env(nnunet_env):
    # one thread: tiny models run fastest so, and a busy CI machine cannot oversubscribe the cores
    # (OpenMP threads spin when they wait)
    return dict(nnunet_env, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def vit_plans(plan_hippocampus):
    return plan_hippocampus("meddinov3_vitb16", "-w", "random", "--vit_kwargs", json.dumps(TINY))


def test_vit_planner_plans_2d_with_16_multiples(vit_plans, hippocampus_converted):
    config = vit_plans["configurations"]["2d"]
    assert list(vit_plans["configurations"]) == ["2d"]
    assert all(p % 16 == 0 for p in config["patch_size"]) and config["batch_size"] >= 2
    assert config["architecture"]["network_class_name"].endswith("DINOv3SegmentationNetwork")
    kwargs = config["architecture"]["arch_kwargs"]
    assert kwargs["vit"] == "vit_base_patch16_dinov3" and kwargs["vit_kwargs"] == TINY
    assert kwargs["aggregation_blocks"] == [0, 1, 2, 3] and len(kwargs["input_window"]) == 1
    assert config["nnfm"]["weights"] == "random" and config["nnfm"]["tokens_per_patch"] > 0
    assert (hippocampus_converted["preprocessed"] / f"{PLANS}_2d").is_dir()


def test_hires_option_makes_the_in_plane_spacing_finer(vit_plans, hippocampus_converted, vit_env):
    run_cli(["nnFM_plan_and_preprocess", "-d", hippocampus_converted["id"], "-e", "meddinov3_vitb16", "-w", "random",
             "--vit_kwargs", json.dumps(TINY), "--hires", "128", "--no_pp", "-np", "1"], vit_env)
    hires = json.loads((hippocampus_converted["preprocessed"] / f"{PLANS}.json").read_text())["configurations"]["2d"]
    base = vit_plans["configurations"]["2d"]
    assert max(hires["median_image_size_in_voxels"]) == pytest.approx(128)
    assert all(h < b for h, b in zip(hires["spacing"], base["spacing"]))
    assert hires["nnfm"]["hires"] == 128 and max(hires["patch_size"]) == 128
    # restore the plans the other tests use
    (hippocampus_converted["preprocessed"] / f"{PLANS}.json").write_text(json.dumps(vit_plans, indent=1))


@pytest.fixture(scope="module")
def trained_vit(vit_plans, hippocampus_converted, vit_env, tmp_path_factory):
    """nnFMTrainer_MedDINOv3 from a MedDINOv3-format file, then nnUNetv2_predict (conftest.train_and_predict)."""
    folder = tmp_path_factory.mktemp("vit")
    weights = tiny_meddinov3_checkpoint(folder / "tiny_meddinov3.pth")
    run = train_and_predict(hippocampus_converted, vit_env, folder, "nnFMTrainer_MedDINOv3", PLANS, "2d", weights)
    return dict(run, weights=weights)


def test_vit_training_loads_weights_and_uses_the_vit_recipe(trained_vit):
    provenance = trained_vit["provenance"]
    assert provenance["encoder"] == "meddinov3_vit" and provenance["weights"] == str(trained_vit["weights"])
    report = provenance["report"]
    assert report["missing"] == [] and report["unexpected"] == [] and report["adapted"]
    assert "backbone.mask_token" in report["intentionally_dropped"]
    assert "encoder lr 3e-05 (weights family meddinov3_vit)" in trained_vit["log"]
    assert "betas (0.9, 0.98)" in trained_vit["log"]
    checkpoint = trained_vit["checkpoint"]
    assert checkpoint["trainer_name"] == "nnFMTrainer_MedDINOv3"
    assert any(k.startswith("encoder.blocks.") for k in checkpoint["network_weights"])
    lrs = {round(g["initial_lr"], 8) for g in checkpoint["optimizer_state"]["param_groups"]}
    assert lrs == {3e-4, 3e-5}


def test_vit_predict_with_nnunet(trained_vit):
    # each held-back case predicted at its image's size, labels 0-2 (checked by conftest.predict_held_back)
    plans = json.loads((trained_vit["predictions"] / "plans.json").read_text())
    assert plans["configurations"]["2d"]["nnfm"]["provenance_by_fold"]["0"]["encoder"] == "meddinov3_vit"


def test_vit_scratch_trainer_trains_without_weights(vit_plans, hippocampus_converted, vit_env, tmp_path):
    run = train_and_predict(hippocampus_converted, vit_env, tmp_path, "nnFMTrainer_MedDINOv3_scratch", PLANS, "2d",
                            predict=False)
    assert run["provenance"]["weights"] is None
    assert "encoder lr 0.0003 (weights family none: random init)" in run["log"]
