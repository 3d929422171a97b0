"""Pretrained weights into nnU-Net's own plans (issue 27, deliverable 2): nnFMTrainer_nnUNetPlans and the
shape-fitting load (nnfm/weights/shape_fit.py) from a network of another topology."""
import hashlib
import json
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from conftest import predict_held_back, run_cli, trainer_in_process
from nnfm.errors import CheckpointMismatchError, ConfigurationError
from nnfm.networks.anatomix_unet import AnatomixUNet
from nnfm.weights.shape_fit import load_fitting


def plain_unet(input_channels: int, features, kernels, strides, num_classes: int = 3) -> PlainConvUNet:
    """nnU-Net's PlainConvUNet as get_network_from_plans builds it for 3d_fullres (instance norm, LeakyReLU)."""
    return PlainConvUNet(input_channels, len(features), list(features), torch.nn.Conv3d, kernels, strides, 2,
                         num_classes, 2, conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
                         norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
                         nonlin_kwargs={"inplace": True}, deep_supervision=True)


# a "pretraining" topology: 5 stages, isotropic 3^3 kernels; the dataset's plans: 4 stages, a 1x3x3 first stage
PRETRAINED = dict(features=[32, 64, 128, 256, 320], kernels=[[3, 3, 3]] * 5, strides=[[1, 1, 1]] + [[2, 2, 2]] * 4)
PLANNED = dict(features=[32, 64, 128, 256], kernels=[[1, 3, 3]] + [[3, 3, 3]] * 3,
               strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]])


def test_every_fitting_tensor_is_loaded_and_every_other_keeps_nnunets_init_with_its_reason(tmp_path):
    torch.manual_seed(0)
    source = plain_unet(1, **PRETRAINED)
    path = tmp_path / "pretrained.pth"
    torch.save({"network_weights": source.state_dict()}, path)  # nnU-Net's checkpoint layout
    network = plain_unet(2, **PLANNED, num_classes=4)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    report = load_fitting(network, path, "sha", "pretrained.pth")
    state, file = network.state_dict(), source.state_dict()
    # stage 0: 1x3x3 kernels here, 3^3 in the file: the centre slice; its first conv also 1 -> 2 input channels
    stem = "encoder.stages.0.0.convs.0.conv.weight"
    assert "1 -> 2 (repeat / 2)" in report.adapted[stem]
    second = "encoder.stages.0.0.convs.1.conv.weight"
    assert "centre slice" in report.adapted[second] and torch.equal(state[second], file[second][:, :, 1:2])
    # deeper stages of the same widths load as they are; the 5th stage and its decoder are unused
    deep = "encoder.stages.3.0.convs.0.conv.weight"
    assert deep in report.loaded and torch.equal(state[deep], file[deep])
    assert "encoder.stages.4.0.convs.0.conv.weight" in report.unused
    # the dataset's classes: nnU-Net's initialisation, with the reason
    assert all(torch.equal(state[k], before[k]) for k in report.initialised)
    assert all("segmentation layer" in why for k, why in report.initialised.items() if ".seg_layers." in k)
    assert not any(".seg_layers." in k for k in report.loaded)
    # the decoder's levels matched by resolution (4 vs 5 stages): the network's top level (index 2) is the file's
    # index 3; the 1x2x2 transposed convolution of the anisotropic level keeps nnU-Net's init, with its reason
    top, level1 = "decoder.stages.2.convs.1.conv.weight", "decoder.stages.1.convs.0.conv.weight"
    assert "centre slice" in report.adapted[top]  # 1x3x3 here as the first encoder stage
    assert torch.equal(state[top], file["decoder.stages.3.convs.1.conv.weight"][:, :, 1:2])
    assert level1 in report.loaded and torch.equal(state[level1], file["decoder.stages.2.convs.0.conv.weight"])
    assert "shape [64, 32, 2, 2, 2]" in report.initialised["decoder.transpconvs.2.weight"]
    assert "decoder.stages.0.convs.0.conv.weight" in report.unused and "matched by resolution" in report.format()
    assert 0.8 < report.loaded_fraction < 1 and "pretrained" in report.format()
    # every tensor decided once, under its first name (DNA registers some modules twice: all_modules, decoder.encoder)
    names = set(report.loaded) | set(report.adapted) | set(report.initialised)
    assert names <= set(state) and len(names) == len({v.data_ptr() for v in state.values()})
    assert torch.equal(state["decoder.encoder.stages.0.0.convs.0.conv.weight"], state[stem])  # the alias too


def test_an_nnssl_pretraining_file_transfers_stem_and_encoder_only(tmp_path):
    """A file carrying nnssl_adaptation_plan: its decoder is nnssl's MAE reconstruction decoder, which nnU-Net master
    never transfers; in nnU-Net's own ResEnc plans the decoder keeps nnU-Net's init, with that reason, even where
    its shapes fit."""
    from nnfm.networks.resenc_segmentation import RESENC_UNET_TOPOLOGY, ResEncUNetSegmentationNetwork

    torch.manual_seed(1)
    source = ResEncUNetSegmentationNetwork(1, 1, False, **RESENC_UNET_TOPOLOGY)
    path = tmp_path / "nnssl.pth"
    torch.save({"network_weights": source.state_dict(),
                "nnssl_adaptation_plan": {"key_to_encoder": "encoder.stages", "key_to_stem": "encoder.stem"}}, path)
    network = ResEncUNetSegmentationNetwork(1, 3, True, **RESENC_UNET_TOPOLOGY)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    report = load_fitting(network, path, "sha", "nnssl.pth")
    state = network.state_dict()
    assert report.loaded and all(k.startswith(("encoder.stem.", "encoder.stages.")) for k in report.loaded)
    decoder = "decoder.stages.0.convs.0.conv.weight"
    assert "reconstruction" in report.initialised[decoder] and torch.equal(state[decoder], before[decoder])
    assert "reconstruction" in report.unused[decoder]
    assert not any(".all_modules." in k or k.startswith("decoder.encoder.") for k in report.unused)  # first names
    encoder = sum(v.numel() for k, v in network.named_parameters() if k.startswith("encoder."))
    outside_seg = sum(v.numel() for k, v in network.named_parameters() if ".seg_layers." not in k)
    buffers = sum(v.numel() for k, v in network.named_buffers() if ".seg_layers." not in k)
    assert report.loaded_fraction == pytest.approx(encoder / (outside_seg + buffers), rel=0.02)
    # the same file without the plan is a whole nnU-Net network: its decoder loads
    torch.save({"network_weights": source.state_dict()}, tmp_path / "whole.pth")
    assert decoder in load_fitting(ResEncUNetSegmentationNetwork(1, 3, True, **RESENC_UNET_TOPOLOGY),
                                   tmp_path / "whole.pth", "sha").loaded


def test_a_file_of_another_architecture_is_refused_with_both_key_layouts(tmp_path):
    path = tmp_path / "anatomix.pth"
    torch.save(AnatomixUNet().state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="Nothing in .* fits PlainConvUNet.*model.0.weight.*encoder"):
        load_fitting(plain_unet(1, **PLANNED), path, "sha")


def nnunet_plans(hippocampus: dict, nnunet_env: dict) -> dict:
    """nnU-Net's own plans of the test dataset, planned and preprocessed by nnU-Net once."""
    path = hippocampus["preprocessed"] / "nnUNetPlans.json"
    if not path.is_file():
        run_cli(["nnUNetv2_plan_and_preprocess", "-d", hippocampus["id"], "-c", "3d_fullres", "-np", 1], nnunet_env)
    return json.loads(path.read_text())


@pytest.mark.e2e
def test_nnunets_own_pretrained_weights_flag_is_what_the_provenance_records(hippocampus, nnunet_env, tmp_path,
                                                                           monkeypatch):
    """nnUNetv2_train -tr nnFMTrainer_nnUNetPlans -pretrained_weights FILE: nnU-Net loads FILE over the network right
    after initialize(), so FILE is what nnfm_pretrained.json names. Before, the default weights were shape-fitted
    and recorded, then overwritten by nnU-Net: the provenance named weights the network did not hold."""
    from nnfm_trainers.nnfm_nnunet_plans_trainer import nnFMTrainer_nnUNetPlans

    dataset = dict(hippocampus, plans=nnunet_plans(hippocampus, nnunet_env))
    results = tmp_path / "results"
    build = lambda path: trainer_in_process(nnFMTrainer_nnUNetPlans, dataset, nnunet_env, monkeypatch,  # noqa: E731
                                            results, argv=("-device", "cpu", "-pretrained_weights", str(path)))
    checkpoint = tmp_path / "checkpoint_final.pth"
    donor = build(checkpoint)  # the same plans' network, as nnU-Net's -pretrained_weights needs it
    network = nnFMTrainer_nnUNetPlans.build_network_architecture(
        donor.plans_manager, donor.configuration_manager, 1, 3, True)
    torch.save({"network_weights": network.state_dict(), "nnfm_input_convention": "zscore"}, checkpoint)
    trainer = build(checkpoint)
    trainer.initialize()
    provenance = json.loads((Path(trainer.output_folder) / "nnfm_pretrained.json").read_text())
    assert provenance["weights"] == str(checkpoint) and "-pretrained_weights" in provenance["via"]
    assert provenance["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    window = tmp_path / "window01.pth"  # intensities nnU-Net's z-scoring does not give: refused, as nnFM_WEIGHTS
    torch.save({"network_weights": network.state_dict(), "nnfm_input_convention": "window01"}, window)
    with pytest.raises(ConfigurationError, match="pretrained on input convention `window01`"):
        build(window).initialize()


@pytest.mark.e2e
def test_nnunets_own_plans_start_from_weights_of_another_topology(hippocampus, nnunet_env, tmp_path):
    """nnUNetv2_train -tr nnFMTrainer_nnUNetPlans -p nnUNetPlans with nnFM_WEIGHTS = a 5-stage PlainConvUNet (nnU-Net
    plans Hippocampus with 4): the fitting tensors are loaded, the log and nnfm_pretrained.json say which, and
    nnUNetv2_predict runs on the trained model. Weights that saw anatomix's [0, 1] input are refused."""
    nnunet_plans(hippocampus, nnunet_env)
    weights = tmp_path / "pretrained.pth"
    torch.save({"network_weights": plain_unet(1, **PRETRAINED).state_dict(), "nnfm_input_convention": "zscore"},
               weights)
    trainer = "nnFMTrainer_nnUNetPlans"
    run_cli(["nnUNetv2_train", hippocampus["id"], "3d_fullres", 0, "-tr", trainer, "-p", "nnUNetPlans", "-device",
             "cpu"], dict(nnunet_env, nnFM_WEIGHTS=str(weights)))
    fold = hippocampus["results"] / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    provenance = json.loads((fold / "nnfm_pretrained.json").read_text())
    assert provenance["weights"] == str(weights) and provenance["input_convention"] == "zscore"
    assert provenance["loaded_fraction"] > 0.3 and provenance["report"]["loaded"]
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "shape-fitting load into the plans' network" in log and "SGD (momentum 0.99, Nesterov); lr 0.01" in log
    predict_held_back(hippocampus, nnunet_env, tmp_path, trainer, "nnUNetPlans", "3d_fullres")
    window = tmp_path / "window01.pth"
    torch.save({"network_weights": plain_unet(1, **PRETRAINED).state_dict(), "nnfm_input_convention": "window01"},
               window)
    result = run_cli(["nnUNetv2_train", hippocampus["id"], "3d_fullres", 1, "-tr", trainer, "-p", "nnUNetPlans",
                      "-device", "cpu"], dict(nnunet_env, nnFM_WEIGHTS=str(window)), check=False)
    assert result.returncode != 0 and "pretrained on input convention `window01`" in result.stdout + result.stderr


def test_the_benchmark_trains_it_on_nnunets_own_plans_with_the_weights_given():
    """nnFM_benchmark's trainer table is built from every trainer class; one of nnU-Net's own network (no registered
    encoder) made the whole table raise 'Unknown encoder None' before it knew such trainers."""
    from nnfm.benchmark.trainer_table import TrainerSpec, trainer_table

    trainer_table.cache_clear()
    assert trainer_table()["nnFMTrainer_nnUNetPlans"] == TrainerSpec("nnUNetPlans", None, pretrained=True)
    assert trainer_table()["nnFMTrainer_nnUNetPlans_scratch"] == TrainerSpec("nnUNetPlans", None, pretrained=False)
    assert trainer_table()["nnFMTrainer_nnUNetPlans_nnssl"] == TrainerSpec("nnUNetPlans", None, pretrained=True)


def test_the_nnssl_variant_changes_only_the_recipe_to_nnunet_masters_fine_tuning():
    """nnFMTrainer_nnUNetPlans_nnssl: PretrainedTrainer's lr 1e-3 with a 5% warm-up (pretrained), 1e-2 from scratch,
    deep supervision on as nnU-Net's own network; everything else is nnFMTrainer_nnUNetPlans'."""
    from nnfm_trainers.nnfm_nnunet_plans_trainer import nnFMTrainer_nnUNetPlans, nnFMTrainer_nnUNetPlans_nnssl

    base, variant = nnFMTrainer_nnUNetPlans.recipe(), nnFMTrainer_nnUNetPlans_nnssl.recipe()
    assert (base.initial_lr(True), variant.initial_lr(True), variant.initial_lr(False)) == (1e-2, 1e-3, 1e-2)
    assert variant.full_warmup_fraction == 0.05 and base.full_warmup_fraction == 0 and variant.deep_supervision
    assert (variant.optimizer, variant.momentum, variant.weight_decay) == (base.optimizer, base.momentum,
                                                                          base.weight_decay)
    overridden = set(vars(nnFMTrainer_nnUNetPlans_nnssl)) - {"__module__", "__doc__", "__qualname__"}
    assert overridden == {"base_recipe", "recipe_changes"}


@pytest.mark.e2e
def test_nnfms_default_is_nnunets_own_plans_started_from_the_embedded_weights(hippocampus_converted, nnunet_env,
                                                                            tmp_path):
    """nnFM_plan_and_preprocess -d ID without -e: nnU-Net's own plans (what nnU-Net's ExperimentPlanner writes, plus
    the weights in an nnfm section), then nnUNetv2_train -tr nnFMTrainer_nnUNetPlans without nnFM_WEIGHTS starts
    nnU-Net's network from nnFM's embedded plainconv_unet_synth_nnfm, and nnUNetv2_predict runs on the model."""
    dataset = hippocampus_converted
    result = run_cli(["nnFM_plan_and_preprocess", "-d", dataset["id"], "-np", 1], nnunet_env)
    assert "-tr nnFMTrainer_nnUNetPlans" in result.stdout and "plainconv_unet_synth_nnfm" in result.stdout
    ours = json.loads((dataset["preprocessed"] / "nnUNetPlans.json").read_text())
    run_cli(["nnUNetv2_plan_experiment", "-d", dataset["id"], "-overwrite_plans_name", "nnUNetOwnCheck"], nnunet_env)
    own = json.loads((dataset["preprocessed"] / "nnUNetOwnCheck.json").read_text())
    section = ours["configurations"]["3d_fullres"].pop("nnfm")
    assert section["weights"] == "plainconv_unet_synth_nnfm" and section["input_convention"] == "zscore"
    rename = json.dumps(own["configurations"]).replace("nnUNetOwnCheck_", "nnUNetPlans_")  # data_identifier
    assert ours["configurations"] == json.loads(rename)
    trainer = "nnFMTrainer_nnUNetPlans"
    results = tmp_path / "results"
    env = dict(nnunet_env, nnUNet_results=str(results))
    run_cli(["nnUNetv2_train", dataset["id"], "3d_fullres", 0, "-tr", trainer, "-device", "cpu"], env)
    fold = results / dataset["name"] / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    provenance = json.loads((fold / "nnfm_pretrained.json").read_text())
    from nnfm.weights.registry import get_weights_entry
    assert provenance["weights"] == "plainconv_unet_synth_nnfm"
    assert provenance["sha256"] == get_weights_entry("plainconv_unet_synth_nnfm").sha256
    assert provenance["via"].startswith("plans") and provenance["loaded_fraction"] == 1.0
    predict_held_back(dict(dataset, results=results / dataset["name"]), env, tmp_path, trainer, "nnUNetPlans",
                      "3d_fullres", tta=False)


def test_weights_pretrained_on_other_intensities_than_nnunets_normalisation_are_refused_with_the_fix():
    from nnfm.weights.input_convention import check_nnunet_normalisation_fits

    check_nnunet_normalisation_fits("zscore", ["ZScoreNormalization"], [False], "w")  # MRI as nnU-Net plans it
    check_nnunet_normalisation_fits("nnunet", ["CTNormalization"], [False], "w")
    for schemes, mask in ((["CTNormalization"], [False]), (["ZScoreNormalization"], [True])):
        with pytest.raises(ConfigurationError, match="pretrained on input convention `zscore`.*Fix: .*-w random"):
            check_nnunet_normalisation_fits("zscore", schemes, mask, "w")


def test_3d_weights_into_a_2d_configuration_are_refused_and_the_fraction_counts_parameters(tmp_path):
    """Before: a 2D PlainConvUNet took the 3D file's biases and norms around random kernels and reported 73 % of
    its tensors as pretrained."""
    path = tmp_path / "pretrained.pth"
    torch.save({"network_weights": plain_unet(1, **PRETRAINED).state_dict()}, path)
    network_2d = PlainConvUNet(1, 4, [32, 64, 128, 256], torch.nn.Conv2d, [[3, 3]] * 4, [[1, 1]] + [[2, 2]] * 3, 2,
                               3, 2, conv_bias=True, norm_op=torch.nn.InstanceNorm2d,
                               norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
                               deep_supervision=True)
    before = {k: v.clone() for k, v in network_2d.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"3D convolutions .* 2D ones .*Fix: train a 3D configuration"):
        load_fitting(network_2d, path, "sha", "pretrained.pth")
    assert all(torch.equal(v, before[k]) for k, v in network_2d.state_dict().items())  # nothing loaded
    # the fraction is by parameters: the 5-stage file fills a 4-stage network but for a few small tensors
    network = plain_unet(1, **PLANNED)
    report = load_fitting(network, path, "sha", "pretrained.pth")
    elements = sum(v.numel() for k, v in network.named_parameters() if ".seg_layers." not in k)
    assert report.elements == elements
    initialised = sum(network.state_dict()[k].numel() for k in report.initialised if ".seg_layers." not in k)
    assert report.pretrained_elements == elements - initialised
    assert report.loaded_fraction == pytest.approx(1 - initialised / elements)
