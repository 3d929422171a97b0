"""nnssl / OpenMind ResEnc-L: nnU-Net's ResidualEncoderUNet with an nnssl-pretrained encoder.

The published layout (nnssl_resenc_l.json, 956 keys in nnssl's release dict) loads strictly into the encoder,
the decoder keys are reported as dropped, the stem adapts to more channels, the adaptation plan is read from
the checkpoint (topology, patch, spacing, keys), and a tiny nnssl-format checkpoint trains through
nnUNetv2_train and predicts through nnUNetv2_predict on real Hippocampus MRI.
"""
import json

import pytest
import torch

from conftest import LAYOUTS, published_checkpoint_from_layout, train_and_predict
from nnfm.errors import ChannelMismatchError, CheckpointMismatchError, ConfigurationError, PatchSizeError
from nnfm.networks.resenc_segmentation import ResEncSegmentationNetwork
from nnfm.weights import load_pretrained
from nnfm.weights.checkpoint_io import read_state_dict
from nnfm.weights.families import detect_family
from nnfm.weights.nnssl_adaptation import RESENC_L_TOPOLOGY, adaptation_for_planning, nnssl_adaptation

LAYOUT = LAYOUTS / "nnssl_resenc_l.json"
TINY = {"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "kernel_sizes": [[3, 3, 3]] * 4,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 3, "n_blocks_per_stage": [1, 1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1, 1], "conv_bias": True, "norm_eps": 1e-5}


def adaptation_plan(arch_class_name="ResidualEncoderUNet", topology=None, patch=(32, 32, 32), **overrides):
    """An nnssl adaptation plan as AdaptationPlan.serialize writes it (MIC-DKFZ/nnssl adaptation_plan.py)."""
    topology = topology or TINY
    arch_kwargs = None if arch_class_name != "ResidualEncoderUNet" else {
        "n_stages": topology["n_stages"], "features_per_stage": topology["features_per_stage"],
        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": topology["kernel_sizes"],
        "strides": topology["strides"], "n_blocks_per_stage": topology["n_blocks_per_stage"],
        "n_conv_per_stage_decoder": topology["n_conv_per_stage_decoder"], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.modules.activation.LeakyReLU",
        "nonlin_kwargs": {"inplace": True}}
    plan = {"architecture_plans": {"arch_class_name": arch_class_name, "arch_kwargs": arch_kwargs,
                                   "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"]},
            "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                              "configurations": {"onemmiso": {"spacing": [1.0, 1.0, 1.0], "patch_size": list(patch),
                                                              "normalization_schemes": ["ZScoreNormalization"]}}},
            "pretrain_num_input_channels": 1, "recommended_downstream_patchsize": list(patch),
            "key_to_encoder": "encoder.stages", "key_to_stem": "encoder.stem",
            "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
            "key_to_lpe": None}
    plan.update(overrides)
    return plan


def nnssl_release(state: dict, plan: dict) -> dict:
    """What nnssl's add_adaptation_plan.py releases and nnU-Net master's nnUNetv2_train_pretrained loads."""
    return {"network_weights": state, "nnssl_adaptation_plan": plan, "init_args": {"configuration": "onemmiso"},
            "trainer_name": "BaseMAETrainer", "citations": []}


def tiny_nnssl_checkpoint(path, seed=0, **plan_overrides):
    torch.manual_seed(seed)
    mae = ResEncSegmentationNetwork(1, 1, False, **TINY)  # MAE: one reconstruction output channel
    state = {k: v.clone() for k, v in mae.state_dict().items()}
    torch.save(nnssl_release(state, adaptation_plan(**plan_overrides)), path)
    return path, state


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The published layout with random values, aliases tied as in a real file, inside nnssl's release dict."""
    state = published_checkpoint_from_layout(LAYOUT)["network_weights"]
    for key in list(state):
        if key.startswith("decoder.encoder."):
            state[key] = state[key[len("decoder."):]]
        elif ".all_modules.0." in key:
            state[key] = state[key.replace(".all_modules.0.", ".conv.")]
        elif ".all_modules.1." in key:
            state[key] = state[key.replace(".all_modules.1.", ".norm.")]
    path = tmp_path_factory.mktemp("resenc") / "checkpoint_final.pth"
    torch.save(nnssl_release(state, adaptation_plan("ResEncL", patch=(160, 160, 160))), path)
    return path, state


def test_network_is_nnunets_residual_encoder_unet_with_exactly_the_published_keys():
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    layout = {e["key"]: e["shape"] for e in json.loads(LAYOUT.read_text())["keys"]}
    with torch.device("meta"):
        network = ResEncSegmentationNetwork(1, 1, False, **RESENC_L_TOPOLOGY)
    assert isinstance(network, ResidualEncoderUNet)
    assert {k: list(v.shape) for k, v in network.state_dict().items()} == layout
    assert len(network.encoder.state_dict()) == 448 and len(layout) == 956
    assert network.key_to_encoder == "encoder.stages" and network.key_to_stem == "encoder.stem"


def test_published_layout_loads_the_encoder_strictly_and_reports_every_decoder_key(published):
    path, state = published
    network = ResEncSegmentationNetwork(1, 3, False)
    report = load_pretrained(network.encoder, path, family=("nnssl_resenc",))
    assert report.ok and report.family == "nnssl_resenc" and report.unwrapped == ["['network_weights']"]
    assert len(report.loaded) == 448 and not report.missing and not report.unexpected and not report.adapted
    # every key of the file is loaded or on the drop list, each with its reason
    assert {f"encoder.{k}" for k in report.loaded} | set(report.intentionally_dropped) == set(state)
    assert all(k.startswith("decoder.") for k in report.intentionally_dropped)
    assert "alias of encoder" in report.intentionally_dropped["decoder.encoder.stages.5.blocks.5.conv2.conv.weight"]
    assert "re-initialised" in report.intentionally_dropped["decoder.seg_layers.0.weight"]
    loaded = network.encoder.state_dict()
    assert all(torch.equal(loaded[k], state[f"encoder.{k}"]) for k in loaded)


def test_stem_repeats_and_divides_for_more_input_channels(published):
    path, _ = published
    one, three = ResEncSegmentationNetwork(1, 2, False), ResEncSegmentationNetwork(3, 2, False)
    load_pretrained(one.encoder, path, family=("nnssl_resenc",))
    report = load_pretrained(three.encoder, path, family=("nnssl_resenc",))
    # both kernels nnssl names in keys_to_in_proj (the conv and its all_modules alias), as nnU-Net master
    assert set(report.adapted) == {"stem.convs.0.conv.weight", "stem.convs.0.all_modules.0.weight"}
    assert all("1 -> 3 (repeat / 3)" in how for how in report.adapted.values())
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(one.encoder.stem(x), three.encoder.stem(x.repeat(1, 3, 1, 1, 1)), atol=1e-5)


def test_a_two_channel_stem_into_three_channels_is_refused(tmp_path):
    path, _ = tiny_nnssl_checkpoint(tmp_path / "tiny.pth")
    state = torch.load(path, weights_only=True)
    for key in ("encoder.stem.convs.0.conv.weight", "encoder.stem.convs.0.all_modules.0.weight"):
        state["network_weights"][key] = state["network_weights"][key].repeat(1, 2, 1, 1, 1)
    torch.save(state, path)
    with pytest.raises(ChannelMismatchError, match="2 -> 3 cannot be mapped"):
        load_pretrained(ResEncSegmentationNetwork(3, 2, False, **TINY).encoder, path, family=("nnssl_resenc",))


def test_the_adaptation_plan_is_read_from_the_checkpoint(tmp_path):
    path, _ = tiny_nnssl_checkpoint(tmp_path / "tiny.pth", patch=(48, 64, 48))
    adaptation = adaptation_for_planning(str(path))
    assert adaptation.topology == TINY and adaptation.architecture == "ResidualEncoderUNet"
    assert adaptation.recommended_downstream_patchsize == [48, 64, 48] and adaptation.pretrain_patch_size == [48, 64, 48]
    assert adaptation.pretrain_spacing == [1.0, 1.0, 1.0] and adaptation.pretrain_num_input_channels == 1
    assert adaptation.pretrain_normalization == ["ZScoreNormalization"]
    assert adaptation.keys_to_in_proj == ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")
    assert str(path) in adaptation.source
    # the "ResEncL" preset name (arch_kwargs None) is nnU-Net master's fixed ResEnc-L
    preset = nnssl_adaptation(nnssl_release({}, adaptation_plan("ResEncL", patch=(160, 160, 160))))
    assert preset.topology == RESENC_L_TOPOLOGY and preset.recommended_downstream_patchsize == [160, 160, 160]
    # not at hand at planning time: nnssl's defaults, and the plans say so
    missing = adaptation_for_planning("resenc_l_openmind_mae")
    assert missing.topology == RESENC_L_TOPOLOGY and "not available at planning time" in missing.source


def test_a_primus_adaptation_plan_is_refused_with_the_encoder_to_use(tmp_path):
    with pytest.raises(ConfigurationError, match="'PrimusM'.*-e primus_m"):
        nnssl_adaptation(nnssl_release({}, adaptation_plan("PrimusM")))


def test_a_plan_with_other_keys_or_another_topology_is_refused(tmp_path):
    path, _ = tiny_nnssl_checkpoint(tmp_path / "keys.pth", key_to_encoder="encoder.blocks")
    with pytest.raises(CheckpointMismatchError, match="'encoder.blocks'"):
        load_pretrained(ResEncSegmentationNetwork(1, 2, False, **TINY).encoder, path, family=("nnssl_resenc",))
    path, _ = tiny_nnssl_checkpoint(tmp_path / "tiny.pth")
    with pytest.raises(CheckpointMismatchError, match=r"features \[4, 8, 16, 32\].*-e resenc_l -w FILE"):
        load_pretrained(ResEncSegmentationNetwork(1, 2, False).encoder, path, family=("nnssl_resenc",))


def test_resenc_detection_does_not_take_other_layouts(published, tmp_path):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    assert detect_family(read_state_dict(published[0])[0]) == "nnssl_resenc"
    # every other registered weights file's published layout: tests/test_weight_families.py
    primus = {"down_projection.proj.weight": torch.zeros(8, 1, 8, 8, 8), "eva.pos_embed": torch.zeros(1, 8, 8)}
    assert detect_family(primus) == "nnssl_primus"
    # nnU-Net's default PlainConvUNet has encoder.stages but no encoder.stem: not a ResEnc
    plain = PlainConvUNet(1, 3, [4, 8, 16], torch.nn.Conv3d, 3, [1, 2, 2], 2, 2, [1, 1], True,
                          torch.nn.InstanceNorm3d, {"affine": True}, nonlin=torch.nn.LeakyReLU)
    assert detect_family(plain.state_dict()) != "nnssl_resenc"


def test_patch_not_divisible_by_the_stride_is_refused():
    with pytest.raises(PatchSizeError, match="divisible by 8"):
        ResEncSegmentationNetwork(1, 2, False, **TINY)(torch.zeros(1, 1, 16, 20, 16))


@pytest.mark.e2e
def test_nnssl_checkpoint_plans_trains_and_predicts_through_nnunet(plan_hippocampus, hippocampus_converted, nnunet_env,
                                                                   tmp_path):
    weights, state = tiny_nnssl_checkpoint(tmp_path / "checkpoint_final.pth")
    config = plan_hippocampus("resenc_l", "-w", weights)["configurations"]["3d_fullres"]
    # the topology, the starting patch and the keys come from the checkpoint's adaptation plan
    assert config["architecture"]["arch_kwargs"]["features_per_stage"] == TINY["features_per_stage"]
    assert config["patch_size"] == [32, 32, 32] and config["normalization_schemes"] == ["ZScoreNormalization"]
    assert config["nnfm"]["nnssl_adaptation"]["source"] == f"nnssl_adaptation_plan of {weights}"
    assert config["nnfm"]["weights"] == str(weights)

    # no nnFM_WEIGHTS: the trainer loads the file that the plans name (-w)
    run = train_and_predict(hippocampus_converted, nnunet_env, tmp_path, "nnFMTrainer_ResEncL", "nnFMPlans_resenc_l")
    provenance, checkpoint = run["provenance"], run["checkpoint"]
    report = provenance["report"]
    assert provenance["encoder"] == "nnssl_resenc" and report["missing"] == [] and report["unexpected"] == []
    assert any(k.startswith("decoder.seg_layers.") for k in report["intentionally_dropped"])
    assert checkpoint["current_epoch"] == 1
    # the fine-tuned network is an nnU-Net ResEnc: the nnssl file's keys (per-class layers aside)
    assert {k for k in checkpoint["network_weights"] if "seg_layers" not in k} == \
        {k for k in state if "seg_layers" not in k}
    # nnU-Net master's PretrainedTrainer recipe: SGD 1e-3, Nesterov momentum 0.99
    groups = checkpoint["optimizer_state"]["param_groups"]
    assert all(g["initial_lr"] == 1e-3 and g["momentum"] == 0.99 and g["nesterov"] for g in groups)
