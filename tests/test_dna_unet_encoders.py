"""nnU-Net's own U-Nets as nnFM encoders at a fixed topology (issue 27): ``-e plainconv_unet`` (DNA's PlainConvUNet)
and ``-e resenc_unet`` (DNA's ResidualEncoderUNet, 5 stages).

The networks are dynamic_network_architectures' classes with the state dicts nnU-Net builds from its own plans'
arch_kwargs; an nnU-Net checkpoint_final.pth of the PlainConvUNet loads strictly into all but its seg layers; the
planner plans multiples of the total stride (16, at least 32) within the memory target and z-scores every channel;
plainconv_unet plans, trains and predicts through nnU-Net's commands.
"""
import json
import pydoc
from types import SimpleNamespace

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from conftest import train_and_predict
from nnfm.conventions import ZSCORE
from nnfm.errors import ChannelMismatchError, CheckpointMismatchError, ConfigurationError, PatchSizeError
from nnfm.networks.dna_unet import NNUNET_RECIPE, total_stride
from nnfm.networks.plainconv_segmentation import PLAINCONV_TOPOLOGY, PlainConvSegmentationNetwork
from nnfm.networks.resenc_segmentation import (RESENC_UNET_TOPOLOGY, ResEncSegmentationNetwork,
                                               ResEncUNetSegmentationNetwork)
from nnfm.registry import get_encoder
from nnfm.weights import load_pretrained, pretrained_target
from nnfm.weights.families import detect_family, families
from nnfm_planners.nnfm_dna_planner import nnFMFixedTopologyPlanner
from nnfm_planners.nnfm_resenc_planner import nnFMResEncPlanner

DNA = {"plainconv_unet": PlainConvUNet, "resenc_unet": ResidualEncoderUNet}
NNUNET_OPS = ("conv_op", "norm_op", "dropout_op", "nonlin")  # nnU-Net plans' _kw_requires_import


def nnunet_arch_kwargs(topology: dict) -> dict:
    """The arch_kwargs nnU-Net 2.8.1 writes into nnUNetPlans.json for a 3D U-Net of this topology
    (nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py get_plans_for_configuration)."""
    kwargs = {k: v for k, v in topology.items() if k != "norm_eps"}
    kwargs.update(conv_op="torch.nn.modules.conv.Conv3d", norm_op="torch.nn.modules.instancenorm.InstanceNorm3d",
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
                  nonlin="torch.nn.LeakyReLU", nonlin_kwargs={"inplace": True})
    return kwargs


def from_plans(class_path: str, arch_kwargs: dict, input_channels: int = 1, classes: int = 3, ds: bool = True):
    """nnU-Net's own builder (get_network_from_plans: build, then apply the class's initialize)."""
    imports = [k for k in NNUNET_OPS if k in arch_kwargs]  # none in nnFM's plain kwargs
    return get_network_from_plans(class_path, dict(arch_kwargs), imports, input_channels, classes,
                                  allow_init=True, deep_supervision=ds)


def nnunet_checkpoint(state: dict) -> dict:
    """What nnU-Net 2.8.1's nnUNetTrainer.save_checkpoint writes (the keys nnFM reads; the optimiser left out)."""
    return {"network_weights": state, "optimizer_state": {}, "grad_scaler_state": None, "current_epoch": 1000,
            "init_args": {"plans": {"configurations": {"3d_fullres": {}}}, "configuration": "3d_fullres", "fold": 0},
            "trainer_name": "nnUNetTrainer"}


# ---- networks --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["plainconv_unet", "resenc_unet"])
def test_the_network_is_dnas_class_with_the_state_dict_nnunet_builds_from_its_plans(name):
    entry = get_encoder(name)
    arch_kwargs = nnunet_arch_kwargs(entry.kwargs())
    torch.manual_seed(0)
    nnunet = from_plans(f"{DNA[name].__module__}.{DNA[name].__name__}", arch_kwargs)
    ours = from_plans(entry.network_class, entry.kwargs())  # from the plain kwargs nnFM's plans hold
    also = from_plans(entry.network_class, arch_kwargs)  # nnU-Net's arch_kwargs are taken as they are
    for network in (ours, also):
        assert isinstance(network, DNA[name]) and type(network) is not DNA[name]
        assert {k: v.shape for k, v in network.state_dict().items()} == \
            {k: v.shape for k, v in nnunet.state_dict().items()}
    # nothing else differs (norm eps, nonlinearity, order): with nnU-Net's weights, nnU-Net's output
    ours.load_state_dict(nnunet.state_dict(), strict=True)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        for a, b in zip(ours.eval()(x), nnunet.eval()(x)):
            torch.testing.assert_close(a, b)
    # the deep-supervision scales are nnU-Net's (1 / cumprod of the strides, the last dropped)
    assert ours.deep_supervision_scales == [[1.0] * 3, [0.5] * 3, [0.25] * 3, [0.125] * 3]


def test_the_topologies_are_nnunets_at_five_stages_with_total_stride_16():
    for topology in (PLAINCONV_TOPOLOGY, RESENC_UNET_TOPOLOGY):
        assert topology["features_per_stage"] == [32, 64, 128, 256, 320]
        assert topology["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 4 and total_stride(topology["strides"]) == [16] * 3
        assert topology["kernel_sizes"] == [[3, 3, 3]] * 5 and topology["conv_bias"] is True
    assert PLAINCONV_TOPOLOGY["n_conv_per_stage"] == [2] * 5 and PLAINCONV_TOPOLOGY["n_conv_per_stage_decoder"] == [2] * 4
    assert RESENC_UNET_TOPOLOGY["n_blocks_per_stage"] == [1, 3, 4, 6, 6]
    assert RESENC_UNET_TOPOLOGY["n_conv_per_stage_decoder"] == [1] * 4


def test_patches_off_the_stride_and_other_ops_are_refused():
    network = PlainConvSegmentationNetwork(1, 2, False, **PLAINCONV_TOPOLOGY)
    assert (network.stride, network.min_size, network.pad_to_stride) == (16, 32, False)
    with pytest.raises(PatchSizeError, match="divisible by 16 and at least 32"):
        network(torch.zeros(1, 1, 16, 32, 32))
    with pytest.raises(PatchSizeError, match="divisible by 16"):
        network(torch.zeros(1, 1, 32, 40, 32))
    with pytest.raises(ConfigurationError, match=r"conv_op is torch.nn.modules.conv.Conv2d \(nnFM builds Conv3d\)"):
        PlainConvSegmentationNetwork(1, 2, False, **dict(PLAINCONV_TOPOLOGY, conv_op="torch.nn.modules.conv.Conv2d"))
    with pytest.raises(ConfigurationError, match="n_conv_per_stage has 4.*-e plainconv_unet"):
        PlainConvSegmentationNetwork(1, 2, False, **dict(PLAINCONV_TOPOLOGY, n_conv_per_stage=[2] * 4))


# ---- registry entries and trainers ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, trainers, family, weights", [
    ("plainconv_unet", ("nnFMTrainer_PlainConvUNet", "nnFMTrainer_PlainConvUNet_scratch"), "nnunet_plainconv",
     "plainconv_unet_synth_nnfm"),
    ("resenc_unet", ("nnFMTrainer_ResEncUNet", "nnFMTrainer_ResEncUNet_scratch"), "nnunet_resenc", None)])
def test_entries_use_nnunets_recipe_the_fixed_topology_planner_and_nnfms_weights(name, trainers, family, weights):
    from nnfm_trainers import nnfm_dna_unet_trainer, nnfm_nnunet_plans_trainer, nnfm_trainer_variants

    entry = get_encoder(name)
    assert (entry.trainer, entry.scratch_trainer) == trainers and entry.families == (family,)
    assert pydoc.locate(entry.planner) is nnFMFixedTopologyPlanner  # not the nnssl adaptation (ResEnc-L preset)
    assert entry.weights == weights and entry.input_convention is ZSCORE and entry.configuration == "3d_fullres"
    stride = total_stride(entry.kwargs()["strides"])[0]
    assert (entry.token_stride, entry.min_axis) == (stride, 2 * stride) == (16, 32)
    # nnUNetTrainer's recipe, stated once (nnfm/networks/dna_unet.py), used by every trainer that follows it
    assert entry.recipe is NNUNET_RECIPE and NNUNET_RECIPE.deep_supervision
    assert (NNUNET_RECIPE.optimizer, NNUNET_RECIPE.lr, NNUNET_RECIPE.momentum, NNUNET_RECIPE.nesterov,
            NNUNET_RECIPE.weight_decay, NNUNET_RECIPE.lr_decay) == ("SGD", 1e-2, 0.99, True, 3e-5, "poly")
    assert nnfm_nnunet_plans_trainer.nnFMTrainer_nnUNetPlans.base_recipe is NNUNET_RECIPE
    assert nnfm_trainer_variants.nnFMTrainer_SGD.base_recipe is NNUNET_RECIPE
    trainer, scratch = (getattr(nnfm_dna_unet_trainer, t) for t in trainers)
    assert trainer.encoder == scratch.encoder == name and trainer.use_pretrained and not scratch.use_pretrained
    assert trainer.recipe() == NNUNET_RECIPE


def test_without_weights_the_pretrained_trainer_starts_from_random_initialisation(monkeypatch):
    """weights=None: the plans store 'random' (nnFMPlanner), and the trainer loads nothing (and logs so)."""
    from nnfm_trainers.nnfm_dna_unet_trainer import nnFMTrainer_ResEncUNet

    monkeypatch.delenv("nnFM_WEIGHTS", raising=False)
    trainer = nnFMTrainer_ResEncUNet.__new__(nnFMTrainer_ResEncUNet)
    trainer.configuration_manager = SimpleNamespace(configuration={"nnfm": {"encoder": "resenc_unet",
                                                                            "weights": "random"}})
    assert trainer.default_weights is None and trainer.weights_source() is None
    monkeypatch.setenv("nnFM_WEIGHTS", "/some/file.pth")
    assert trainer.weights_source() == "/some/file.pth"


# ---- checkpoint families ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plainconv_file(tmp_path_factory):
    """An nnU-Net checkpoint_final.pth of the PlainConvUNet (random values, aliases tied as torch saves them)."""
    torch.manual_seed(1)
    network = PlainConvSegmentationNetwork(1, 5, True, **PLAINCONV_TOPOLOGY)
    for p in network.parameters():
        torch.nn.init.normal_(p)
    path = tmp_path_factory.mktemp("plainconv") / "checkpoint_final.pth"
    torch.save(nnunet_checkpoint(network.state_dict()), path)
    return path, {k: v.clone() for k, v in network.state_dict().items()}


def test_an_nnunet_plainconv_checkpoint_loads_strictly_into_all_but_the_seg_layers(plainconv_file):
    path, state = plainconv_file
    assert detect_family(state) == "nnunet_plainconv"
    assert [f.name for f in families() if f.detect(set(state), state)] == ["nnunet_plainconv"]  # no other family's
    network = PlainConvSegmentationNetwork(1, 3, True, **PLAINCONV_TOPOLOGY)  # other classes than the file's 5
    seg_before = {k: v.clone() for k, v in network.state_dict().items() if ".seg_layers." in k}
    report = load_pretrained(pretrained_target(network), path, family=get_encoder("plainconv_unet").families)
    assert report.ok and report.family == "nnunet_plainconv" and report.unwrapped == ["['network_weights']"]
    assert not report.missing and not report.unexpected and not report.shape_mismatched
    assert any(k.startswith("decoder.stages.") for k in report.loaded)
    assert any(k.startswith("decoder.transpconvs.") for k in report.loaded)
    assert {k for k in report.intentionally_dropped} == {k for k in state if k.startswith(("decoder.seg_layers.",
                                                                                           "decoder.encoder."))}
    after = network.state_dict()
    for key, value in after.items():
        if ".seg_layers." in key:
            assert torch.equal(value, seg_before[key]), key  # nnU-Net's initialisation, untouched
        else:
            assert torch.equal(value, state[key]), key  # encoder and decoder from the file


def test_the_plainconv_stem_adapts_to_more_channels_and_refuses_what_cannot_be_mapped(plainconv_file, tmp_path):
    path, state = plainconv_file
    network = PlainConvSegmentationNetwork(2, 3, False, **PLAINCONV_TOPOLOGY)
    report = load_pretrained(pretrained_target(network), path, family=("nnunet_plainconv",))
    stem = "encoder.stages.0.0.convs.0.conv.weight"
    assert set(report.adapted) == {stem, "encoder.stages.0.0.convs.0.all_modules.0.weight"}
    torch.testing.assert_close(network.state_dict()[stem], state[stem].repeat(1, 2, 1, 1, 1) / 2)
    two = PlainConvSegmentationNetwork(2, 3, False, **PLAINCONV_TOPOLOGY).state_dict()
    torch.save({"network_weights": two}, tmp_path / "two.pth")
    with pytest.raises(ChannelMismatchError, match="2 -> 3 cannot be mapped"):
        load_pretrained(pretrained_target(PlainConvSegmentationNetwork(3, 3, False, **PLAINCONV_TOPOLOGY)),
                        tmp_path / "two.pth", family=("nnunet_plainconv",))


def test_a_resenc_unet_file_loads_the_whole_network_but_its_seg_layers(tmp_path):
    """Issue 27: nnFM's ResEnc pretraining trains the decoder too, so resenc_unet reads a ResEnc file as a whole
    network (nnunet_resenc: all but decoder.seg_layers, as nnU-Net's -pretrained_weights); the same file given to
    nnssl's encoder (resenc_l's family) loads stem and encoder only. Both families take its keys: the loading
    network's own family decides."""
    torch.manual_seed(2)
    source = ResEncUNetSegmentationNetwork(1, 3, True, **RESENC_UNET_TOPOLOGY)
    torch.save(nnunet_checkpoint(source.state_dict()), tmp_path / "checkpoint_final.pth")
    assert detect_family(source.state_dict()) == "nnssl_resenc"  # no loading network: nnssl's, its published layout
    assert detect_family(source.state_dict(), prefer=("nnunet_resenc",)) == "nnunet_resenc"
    network = ResEncUNetSegmentationNetwork(2, 3, True, **RESENC_UNET_TOPOLOGY)  # 2 channels, the file's 3 classes
    report = load_pretrained(pretrained_target(network), tmp_path / "checkpoint_final.pth",
                             family=get_encoder("resenc_unet").families)
    assert report.ok and report.family == "nnunet_resenc" and not report.missing and not report.unexpected
    assert {k.split(".")[1] for k in report.intentionally_dropped} == {"seg_layers", "encoder"}  # + the alias
    for name, value in source.state_dict().items():
        if name.startswith(("decoder.stages.", "decoder.transpconvs.", "encoder.stages.")):
            assert torch.equal(network.state_dict()[name], value), name
    stem, alias = "encoder.stem.convs.0.conv.weight", "encoder.stem.convs.0.all_modules.0.weight"
    assert set(report.adapted) == {stem, alias}  # 1 -> 2 channels, the conv and its alias alike
    torch.testing.assert_close(network.state_dict()[alias], source.state_dict()[stem].repeat(1, 2, 1, 1, 1) / 2)
    assert not torch.equal(network.decoder.seg_layers[-1].weight, source.decoder.seg_layers[-1].weight)  # same shape

    nnssl = ResEncSegmentationNetwork(1, 2, False, **RESENC_UNET_TOPOLOGY)
    report = load_pretrained(pretrained_target(nnssl), tmp_path / "checkpoint_final.pth", family=("nnssl_resenc",))
    assert report.family == "nnssl_resenc" and pretrained_target(nnssl) is nnssl.encoder
    assert any(k.startswith("decoder.stages.") for k in report.intentionally_dropped)


def test_an_nnssl_pretraining_file_is_refused_by_resenc_unet_with_the_fix(tmp_path):
    """Its decoder is nnssl's MAE reconstruction decoder, which nnU-Net master never transfers: resenc_unet (whole
    network) stops with the command that loads its encoder (-e resenc_l), before any tensor is loaded."""
    source = ResEncUNetSegmentationNetwork(1, 1, False, **RESENC_UNET_TOPOLOGY)
    torch.save({"network_weights": source.state_dict(), "nnssl_adaptation_plan": {"architecture": "ResEncL"}},
               tmp_path / "nnssl.pth")
    network = ResEncUNetSegmentationNetwork(1, 2, False, **RESENC_UNET_TOPOLOGY)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"reconstruction.*nnFMTrainer_nnUNetPlans.*-e resenc_l"):
        load_pretrained(pretrained_target(network), tmp_path / "nnssl.pth", family=get_encoder("resenc_unet").families)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())


# ---- planner ---------------------------------------------------------------------------------------------------
def _planner(name: str, gpu_gb: float = 8, channels: dict = None):
    """nnFMFixedTopologyPlanner of ``name`` with what patch, batch and normalisation planning read (no dataset)."""
    from nnfm.weights.input_convention import planned_convention

    entry = get_encoder(name)
    planner = nnFMFixedTopologyPlanner.__new__(nnFMFixedTopologyPlanner)
    planner.__dict__.update(entry=entry, encoder=name, network_class=pydoc.locate(entry.network_class),
                            network_kwargs=entry.kwargs(), UNet_vram_target_GB=gpu_gb, UNet_min_batch_size=2,
                            max_dataset_covered=0.05, input_convention=planned_convention(entry, "random"),
                            dataset_json={"channel_names": channels or {"0": "MRI"}},
                            dataset_fingerprint={"median_relative_size_after_cropping": 1.0})
    return planner


@pytest.mark.parametrize("name", ["plainconv_unet", "resenc_unet"])
def test_the_planner_plans_multiples_of_16_of_at_least_32_within_the_memory_target(name):
    planner = _planner(name)
    assert (planner.stride, planner.min_axis) == (16, 32)
    # Hippocampus-like: the median image (36 x 50 x 35 at 1 mm) rounded up to the stride
    patch, batch, _ = planner.plan_patch_and_batch([1.0, 1.0, 1.0], [36, 50, 35], 1, 3, 260 * 36 * 50 * 35)
    assert patch == [48, 64, 48] and batch >= 2
    # a large CT-like image (anisotropic spacing) on a 4 GB target: shrunk, every axis still a multiple of 16
    planner = _planner(name, gpu_gb=4)
    patch, batch, estimate = planner.plan_patch_and_batch([2.5, 0.8, 0.8], [200, 512, 512], 1, 3, 1e10)
    assert all(p % 16 == 0 and p >= 32 for p in patch) and batch >= 2
    assert patch[0] < patch[1] == patch[2]  # the aspect ratio of the spacing
    assert estimate.total_bytes(2) <= 4 * 1024 ** 3
    assert planner.architecture_kwargs(patch, None, None) == get_encoder(name).kwargs()


def test_the_planner_z_scores_every_channel_ct_included():
    schemes, use_mask = _planner("plainconv_unet", channels={"0": "CT", "1": "T2"}) \
        .determine_normalization_scheme_and_whether_mask_is_used_for_norm()
    assert schemes == ["ZScoreNormalization"] * 2 and use_mask == [False, False]


def test_resenc_l_keeps_the_nnssl_adaptation_on_top_of_the_fixed_topology_planner():
    assert issubclass(nnFMResEncPlanner, nnFMFixedTopologyPlanner)
    assert pydoc.locate(get_encoder("resenc_l").planner) is nnFMResEncPlanner


# ---- end to end --------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_plainconv_unet_plans_trains_from_an_nnunet_checkpoint_and_predicts(plan_hippocampus, hippocampus_converted,
                                                                           nnunet_env, tmp_path):
    config = plan_hippocampus("plainconv_unet")["configurations"]["3d_fullres"]
    assert config["architecture"]["network_class_name"] == get_encoder("plainconv_unet").network_class
    assert config["architecture"]["arch_kwargs"] == json.loads(json.dumps(PLAINCONV_TOPOLOGY))
    assert all(p % 16 == 0 and p >= 32 for p in config["patch_size"])
    # the registry default: nnFM's embedded synthetic-data PlainConvUNet (z-scored input, as planned here)
    assert config["normalization_schemes"] == ["ZScoreNormalization"]
    assert config["nnfm"]["weights"] == get_encoder("plainconv_unet").weights == "plainconv_unet_synth_nnfm"
    # resenc_unet through the same planner: its 5-stage topology, not nnssl's ResEnc-L preset
    resenc = plan_hippocampus("resenc_unet", "--no_pp")["configurations"]["3d_fullres"]
    assert resenc["architecture"]["arch_kwargs"] == json.loads(json.dumps(RESENC_UNET_TOPOLOGY))
    assert resenc["patch_size"] == config["patch_size"] and "nnssl_adaptation" not in resenc["nnfm"]

    torch.manual_seed(3)
    source = PlainConvSegmentationNetwork(1, 7, True, **PLAINCONV_TOPOLOGY)  # another dataset's 7 classes
    weights = tmp_path / "checkpoint_final.pth"
    torch.save(nnunet_checkpoint(source.state_dict()), weights)
    run = train_and_predict(hippocampus_converted, nnunet_env, tmp_path, "nnFMTrainer_PlainConvUNet",
                            "nnFMPlans_plainconv_unet", weights=weights, tta=False)
    provenance = run["provenance"]
    report = provenance["report"]
    assert provenance["encoder"] == "nnunet_plainconv" and report["missing"] == [] and report["unexpected"] == []
    assert any(k.startswith("decoder.stages.") for k in report["loaded"])
    assert any(k.startswith("decoder.seg_layers.") for k in report["intentionally_dropped"])
    checkpoint = run["checkpoint"]
    # the fine-tuned network is an nnU-Net PlainConvUNet: the file's keys, 3 Hippocampus classes in the seg layers
    assert set(checkpoint["network_weights"]) == set(source.state_dict())
    assert checkpoint["network_weights"]["decoder.seg_layers.3.weight"].shape[0] == 3
    # nnUNetTrainer's recipe: SGD 1e-2, Nesterov momentum 0.99, deep supervision
    groups = checkpoint["optimizer_state"]["param_groups"]
    assert all(g["initial_lr"] == 1e-2 and g["momentum"] == 0.99 and g["nesterov"] for g in groups)
    debug = json.loads((run["fold"] / "debug.json").read_text())
    assert debug["enable_deep_supervision"] == "True"


def test_a_resenc_file_given_to_another_network_names_every_network_that_takes_it(tmp_path):
    """A whole ResEnc file has nnssl's layout and nnU-Net's: the wrong-family error names both uses (nnssl's encoder
    with -e resenc_l, the whole network with -e resenc_unet or nnU-Net's own plans), not nnssl's alone."""
    from nnfm.errors import WrongCheckpointFamilyError

    torch.save(ResEncUNetSegmentationNetwork(1, 2, False, **RESENC_UNET_TOPOLOGY).state_dict(), tmp_path / "re.pth")
    get_encoder("resenc_unet")  # the registry installs the family -> encoder lookup the message uses
    with pytest.raises(WrongCheckpointFamilyError, match=r"-e resenc_l .*read as .*nnFMTrainer_nnUNetPlans.*"
                                                         r"-e resenc_unet"):
        load_pretrained(pretrained_target(PlainConvSegmentationNetwork(1, 2, False, **PLAINCONV_TOPOLOGY)),
                        tmp_path / "re.pth", family=("nnunet_plainconv",))
