"""Foundation features as nnU-Net's input (issue 28): nnFMTrainer_DropGen and nnfm/networks/feature_input.py.

The unit tests check the wrapper against DropGen's recipe (sebodiaz/DropGen main.py, src/misc.py, src/network.py):
[image, features] concatenated, whole channels of each sample dropped (image included) with p = 0.75 and the rest
scaled by 4 in training, none dropped at inference, features instance-normalised; and that the frozen encoder stays
frozen (eval mode under ``train()``, batch-norm statistics and weights untouched by nnU-Net's SGD with weight decay).
The end-to-end test trains through ``nnUNetv2_train`` on nnU-Net's own plans, predicts, exports the model folder
with ``nnUNetv2_export_model_to_zip`` and predicts again from a fresh results folder it was installed into.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn

from conftest import HIPPOCAMPUS, predict_held_back, run_cli, write_preprocessed_cases
from nnfm.errors import ConfigurationError
from nnfm.networks.feature_input import (DROPGEN_DROPOUT, FEATURE_INPUT_KEY, FeatureInputNetwork,
                                         build_feature_encoder, check_feature_convention)
from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork

ANATOMIX = "nnfm.networks.segmentation_unet.AnatomixSegmentationNetwork"
PRESET = {"num_downs": 4, "ngf": 16, "encoder_out_channels": 16, "norm": "batch"}
PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
# nnU-Net 2.8.1's plans layout of a PlainConvUNet (3 stages, small), as nnUNetv2_plan_and_preprocess writes it
ARCH_KWARGS = {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
               "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
               "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
               "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
               "norm_op_kwargs": {"eps": 1e-5, "affine": True},
               "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
               "nonlin_kwargs": {"inplace": True}}


class StubFeatures(nn.Module):
    """A cheap frozen 'encoder' with batch norm: dense_features = BN(conv(x)), 16 channels."""
    dense_feature_channels = 16

    def __init__(self, channels: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(channels, 16, 1)
        self.norm = nn.BatchNorm3d(16)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-1, 1)
            self.norm.running_var.uniform_(0.5, 2)

    def dense_features(self, x):
        return self.norm(self.conv(x))


def _plain_unet(channels: int, deep_supervision: bool = True) -> nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    return get_network_from_plans(PLAIN, ARCH_KWARGS, ["conv_op", "norm_op", "dropout_op", "nonlin"], channels, 3,
                                  allow_init=True, deep_supervision=deep_supervision)


def _wrapper(dropout: float = DROPGEN_DROPOUT, channels: int = 1) -> FeatureInputNetwork:
    torch.manual_seed(0)
    return FeatureInputNetwork(StubFeatures(channels), _plain_unet(channels + 16), channels, dropout)


def _plans(record=None, patch=(16, 16, 16)) -> PlansManager:
    configuration = {"data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                     "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": [1.0] * 3,
                     "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
                     "pool_op_kernel_sizes": ARCH_KWARGS["strides"],
                     "architecture": {"network_class_name": PLAIN, "arch_kwargs": ARCH_KWARGS,
                                      "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}
    if record is not None:
        configuration[FEATURE_INPUT_KEY] = record
    return PlansManager({"dataset_name": "Dataset999_X", "plans_name": "nnUNetPlans",
                         "configurations": {"3d_fullres": configuration},
                         "original_median_spacing_after_transp": [1.0] * 3, "image_reader_writer": "NibabelIO",
                         "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
                         "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {}})


RECORD = {"encoder": "anatomix", "network_class": ANATOMIX, "encoder_kwargs": PRESET, "weights": "anatomix_synth_nnfm",
          "sha256": "x", "input_convention": "window01", "input_window": [[-1.5, 3.0]], "zero_is_background": [False],
          "feature_channels": 16, "feature_norm": "instance", "dropout": 0.75}


# ---- the wrapper -------------------------------------------------------------------------------------------------
def test_nnunets_network_gets_image_plus_feature_channels_and_keeps_nnunets_interface():
    net = _wrapper()
    x = torch.randn(2, 1, 16, 16, 16)
    assert net.network_input(x).shape == (2, 17, 16, 16, 16)
    assert net.network.encoder.stages[0][0].convs[0].conv.in_channels == 17
    net.eval()
    out = net(x)
    assert isinstance(out, list) and out[0].shape == (2, 3, 16, 16, 16)  # nnU-Net's deep supervision outputs
    # nnUNetTrainer.set_deep_supervision_enabled: mod.decoder.deep_supervision = enabled
    net.decoder.deep_supervision = False
    assert net.network.decoder.deep_supervision is False and net(x).shape == (2, 3, 16, 16, 16)
    assert net.encoder is net.network.encoder
    keys = net.state_dict().keys()
    assert {"features.conv.weight", "features.norm.running_mean"} <= set(keys)
    assert all(k.startswith(("features.", "network.")) for k in keys)


def test_train_mode_never_reaches_the_frozen_encoder():
    net = _wrapper()
    before = {k: v.clone() for k, v in net.features.state_dict().items()}
    net.train()
    assert net.training and net.network.training and not net.features.training and not net.features.norm.training
    assert not any(p.requires_grad for p in net.features.parameters())
    for _ in range(3):
        net(torch.randn(2, 1, 16, 16, 16) * 5 + 3)
    after = net.features.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running_mean / _var / num_batches_tracked too


def test_frozen_encoder_is_untouched_by_nnunets_sgd_with_weight_decay():
    """nnUNetTrainer.configure_optimizers: SGD(self.network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99,
    nesterov=True) gets the frozen parameters too; they get no .grad, so SGD skips them (no decay, no momentum)."""
    net = _wrapper()
    frozen = {k: v.clone() for k, v in net.features.state_dict().items()}
    trainable = {k: v.clone() for k, v in net.network.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    net.train()
    for _ in range(3):
        optimizer.zero_grad(set_to_none=True)
        sum(o.float().pow(2).mean() for o in net(torch.randn(2, 1, 16, 16, 16))).backward()
        optimizer.step()
    assert all(p.grad is None for p in net.features.parameters())
    assert all(torch.equal(frozen[k], v) for k, v in net.features.state_dict().items())
    assert any(not torch.equal(trainable[k], v) for k, v in net.network.state_dict().items())


def test_features_are_the_same_in_training_and_inference_but_for_dropgens_channel_dropout():
    net = _wrapper(DROPGEN_DROPOUT)
    x = torch.randn(64, 1, 8, 8, 8)
    net.eval()
    clean = net.network_input(x)
    features = net.features.dense_features(x)
    # DropGen src/misc.py: InstanceNorm3d(16) after the encoder; image first, then features (main.py torch.cat)
    assert torch.allclose(clean, torch.cat([x, torch.nn.functional.instance_norm(features)], 1), atol=1e-5)
    assert torch.equal(net.network_input(x), clean)  # inference: no dropout (InferenceExtractor)
    net.train()
    torch.manual_seed(1)
    dropped = net.network_input(x)
    scale = 1 / (1 - DROPGEN_DROPOUT)
    zero = dropped.flatten(2).abs().amax(-1) == 0                      # (sample, channel) entirely zero
    kept = torch.isclose(dropped, clean * scale, atol=1e-5).flatten(2).all(-1)
    assert bool((zero | kept).all())        # whole channels of each sample, survivors x 1 / (1 - p)
    assert abs(zero.float().mean().item() - DROPGEN_DROPOUT) < 0.05      # 64 x 17 channels at p = 0.75
    assert 0 < zero[:, 0].sum() < 64        # the image channel is dropped too, per sample
    # per sample, not per batch: the samples' patterns differ
    assert len({tuple(z.tolist()) for z in zero}) > 32


def test_no_dropout_variant_feeds_the_same_input_in_training_and_inference():
    from nnfm_trainers.nnfm_dropgen_trainer import (nnFMTrainer_DropGen, nnFMTrainer_DropGen_noDrop,
                                                    nnFMTrainer_DropGen_p025)
    assert nnFMTrainer_DropGen.feature_dropout == 0.75 and nnFMTrainer_DropGen_noDrop.feature_dropout == 0
    assert nnFMTrainer_DropGen_p025.feature_dropout == 0.25
    net = _wrapper(0.0)
    x = torch.randn(4, 1, 8, 8, 8)
    net.eval()
    clean = net.network_input(x)
    net.train()
    assert torch.equal(net.network_input(x), clean)


def test_the_feature_pass_is_timed_when_asked():
    net = _wrapper()
    net.timing = True
    net.train()
    net(torch.randn(1, 1, 8, 8, 8))
    net.eval()
    net(torch.randn(1, 1, 8, 8, 8))
    timing = net.pop_feature_seconds()
    assert timing["train"][1] == 1 and timing["eval"][1] == 1 and timing["train"][0] > 0
    assert net.pop_feature_seconds()["train"] == (0.0, 0)


# ---- the frozen encoder: anatomix, fed its convention ------------------------------------------------------------
def test_anatomix_features_see_nnunets_zscores_through_the_measured_window():
    features = build_feature_encoder(ANATOMIX, PRESET, 1, "window01", [40, 56, 40], [[-1.5, 3.0]], [False])
    assert isinstance(features, AnatomixSegmentationNetwork) and features.input_norm == "window01"
    assert features.pad_to_stride and features.dense_feature_channels == 16
    x = torch.tensor([-3.0, -1.5, 0.75, 3.0, 9.0]).view(1, 1, 5, 1, 1)
    assert torch.allclose(features.input_window(x).flatten(), torch.tensor([0, 0, 0.5, 1, 1.0]))
    # nnU-Net's Hippocampus patch 40x56x40 is not a multiple of anatomix's stride 16: padded inside, cropped back
    net = FeatureInputNetwork(features, _plain_unet(17), 1)
    net.eval()
    assert net.network_input(torch.randn(1, 1, 40, 56, 40)).shape == (1, 17, 40, 56, 40)


def test_weights_of_a_convention_the_feature_encoder_cannot_be_fed_are_refused():
    check_feature_convention("window01", AnatomixSegmentationNetwork, ["ZScoreNormalization"], [False], "W")
    check_feature_convention("window01", AnatomixSegmentationNetwork, ["CTNormalization"], [False], "W")
    check_feature_convention("zscore", AnatomixSegmentationNetwork, ["ZScoreNormalization"], [False], "W")
    with pytest.raises(ConfigurationError, match=r"W were pretrained on input convention `zscore`.*window01 only"):
        check_feature_convention("zscore", AnatomixSegmentationNetwork, ["CTNormalization"], [False], "W")
    with pytest.raises(ConfigurationError, match="`hu_window`.*Fix: weights pretrained on window01"):
        check_feature_convention("hu_window", AnatomixSegmentationNetwork, ["ZScoreNormalization"], [False], "W")


def test_the_window_is_measured_on_nnunets_preprocessed_cases(tmp_path):
    from nnfm.planning.intensity import measure_preprocessed_window
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    if not (HIPPOCAMPUS / "imagesTr").is_dir():
        pytest.fail(f"MSD Hippocampus not found at {HIPPOCAMPUS}")
    folder = tmp_path / "pre"
    write_preprocessed_cases(folder, 3, label=0)
    window = measure_preprocessed_window(str(folder), [False])
    dataset = nnUNetDatasetBlosc2(str(folder))
    per_case = [np.percentile(np.asarray(dataset.load_case(k)[0][0]), (0.5, 99.5)) for k in dataset.identifiers]
    assert np.allclose(window[0], np.median(per_case, axis=0), atol=1e-3)
    assert window[0][0] < 0 < window[0][1]  # z-scores


# ---- the trainer's network: rebuilt from the plans' record alone -----------------------------------------------------
def test_the_network_is_rebuilt_from_the_plans_record_and_loads_a_trained_state():
    from nnfm_trainers.nnfm_dropgen_trainer import nnFMTrainer_DropGen

    plans = _plans(RECORD)
    configuration = plans.get_configuration("3d_fullres")
    trained = nnFMTrainer_DropGen.build_network_architecture(plans, configuration, 1, 3, True)
    assert isinstance(trained, FeatureInputNetwork) and trained.dropout == 0.75
    assert trained.features.input_window.upper.flatten().tolist() == [3.0]
    with torch.no_grad():  # a "trained" state: every tensor changed, the batch-norm statistics included
        for value in trained.state_dict().values():
            if value.is_floating_point():
                value.add_(0.01)
    # nnUNetv2_predict: build_network_architecture(plans.json, enable_deep_supervision=False), load_state_dict
    predicting = nnFMTrainer_DropGen.build_network_architecture(plans, configuration, 1, 3, False)
    predicting.load_state_dict(trained.state_dict())
    trained.eval(), predicting.eval()
    trained.decoder.deep_supervision = False
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.allclose(trained(x), predicting(x))
    with pytest.raises(ConfigurationError, match=f"lack.*{FEATURE_INPUT_KEY}|{FEATURE_INPUT_KEY}.*lack"):
        nnFMTrainer_DropGen.build_network_architecture(_plans(None), _plans(None).get_configuration("3d_fullres"),
                                                       1, 3, False)


def _bare_trainer(plans: PlansManager):
    """An nnFMTrainer_DropGen with just the plans (no nnU-Net folders): for its record logic."""
    from nnfm_trainers.nnfm_dropgen_trainer import nnFMTrainer_DropGen
    trainer = object.__new__(nnFMTrainer_DropGen)
    trainer.plans_manager, trainer.configuration_name = plans, "3d_fullres"
    trainer.configuration_manager = plans.get_configuration("3d_fullres")
    return trainer


@pytest.mark.parametrize("encoder, message", [
    ("drasclr", r"`hu_window`.*none of the conventions it takes \(hu_window\).*Fix: another encoder"),
    ("dinov3_vitb16", "gives no dense 3D features.*anatomix")])
def test_an_encoder_that_cannot_give_features_from_nnunets_input_is_refused_before_training(encoder, message,
                                                                                            monkeypatch):
    monkeypatch.setenv("nnFM_FEATURE_ENCODER", encoder)
    monkeypatch.delenv("nnFM_FEATURE_WEIGHTS", raising=False)
    monkeypatch.delenv("nnFM_WEIGHTS", raising=False)
    with pytest.raises(ConfigurationError, match=message):
        _bare_trainer(_plans()).new_feature_record()


def test_a_new_fold_reuses_the_model_folders_record_and_refuses_other_features(tmp_path):
    trainer = _bare_trainer(_plans())
    trainer.output_folder_base = str(tmp_path)
    on_disk = dict(RECORD, input_window=[[-2.0, 2.0]])
    (tmp_path / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {FEATURE_INPUT_KEY: on_disk}}}))
    trainer.new_feature_record = lambda: dict(RECORD)          # same choice, another window measured now
    assert trainer.settle_feature_record()["input_window"] == [[-2.0, 2.0]]
    assert trainer.configuration_manager.configuration[FEATURE_INPUT_KEY] == on_disk
    assert trainer.plans_manager.plans["configurations"]["3d_fullres"][FEATURE_INPUT_KEY] == on_disk
    trainer.new_feature_record = lambda: dict(RECORD, weights="anatomix", sha256="y")
    with pytest.raises(ConfigurationError, match="weights: 'anatomix_synth_nnfm' there, 'anatomix' now.*share one"):
        trainer.settle_feature_record()


def test_the_benchmark_trains_it_on_nnunets_plans():
    from nnfm.benchmark.trainer_table import TrainerSpec, trainer_table

    trainer_table.cache_clear()
    assert trainer_table()["nnFMTrainer_DropGen"] == TrainerSpec("nnUNetPlans", None, pretrained=True)
    assert trainer_table()["nnFMTrainer_DropGen_noDrop"] == TrainerSpec("nnUNetPlans", None, pretrained=True)


# ---- end to end --------------------------------------------------------------------------------------------------
def _predictions(folder: Path) -> dict:
    import SimpleITK as sitk
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nii.gz"))}


@pytest.mark.e2e
def test_dropgen_trains_predicts_and_predicts_again_from_an_exported_zip(hippocampus_converted, nnunet_env, tmp_path):
    """nnUNetv2_train -tr nnFMTrainer_DropGen on nnU-Net's own plans (2 iterations, batch 2), nnUNetv2_predict; then
    nnUNetv2_export_model_to_zip, nnUNetv2_install_pretrained_model_from_zip into a fresh results folder with empty
    raw / preprocessed folders (another machine) and nnUNetv2_predict again: the same segmentations."""
    from nnfm.weights import load_pretrained
    from nnfm.networks.anatomix_unet import AnatomixUNet
    from nnfm.weights.registry import get_weights_entry

    data = hippocampus_converted
    env = {k: v for k, v in nnunet_env.items() if k not in ("nnFM_FEATURE_ENCODER", "nnFM_FEATURE_WEIGHTS")}
    if not (data["preprocessed"] / "nnUNetPlans.json").is_file():
        run_cli(["nnUNetv2_plan_and_preprocess", "-d", data["id"], "-c", "3d_fullres", "-np", 1], env)
    trainer = "nnFMTrainer_DropGen"
    run_cli(["nnUNetv2_train", data["id"], "3d_fullres", 0, "-tr", trainer, "-p", "nnUNetPlans", "-device", "cpu"],
            dict(env, nnFM_BATCH_SIZE="2"))
    model = data["results"] / f"{trainer}__nnUNetPlans__3d_fullres"
    fold = model / "fold_0"

    # the record in the model folder's plans (what nnUNetv2_predict builds from) and the provenance
    record = json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"][FEATURE_INPUT_KEY]
    sha = get_weights_entry("anatomix_synth_nnfm").sha256
    assert record["encoder"] == "anatomix" and record["weights"] == "anatomix_synth_nnfm" and record["sha256"] == sha
    assert record["input_convention"] == "window01" and record["dropout"] == 0.75 and record["feature_channels"] == 16
    lo, hi = record["input_window"][0]
    assert lo < 0 < hi and record["zero_is_background"] == [False] and record["feature_norm"] == "instance"
    provenance = json.loads((fold / "nnfm_pretrained.json").read_text())
    assert provenance["weights"] == "anatomix_synth_nnfm" and provenance["sha256"] == sha
    assert provenance["feature_input"]["dropout"] == 0.75 and provenance["report"]["loaded"]

    # the frozen encoder in the final checkpoint is exactly the registered weights, batch-norm statistics included,
    # after nnU-Net's SGD (weight decay 3e-5) ran; the optimiser held nnU-Net's network's parameters only
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    reference = AnatomixUNet()
    load_pretrained(reference, "anatomix_synth_nnfm")
    for key, value in reference.state_dict().items():
        assert torch.equal(weights[f"features.encoder.{key}"], value), key
    from nnfm_trainers.nnfm_dropgen_trainer import nnFMTrainer_DropGen
    plans = PlansManager(json.loads((model / "plans.json").read_text()))
    rebuilt = nnFMTrainer_DropGen.build_network_architecture(plans, plans.get_configuration("3d_fullres"), 1, 3, True)
    in_optimizer = sum(len(g["params"]) for g in checkpoint["optimizer_state"]["param_groups"])
    assert in_optimizer == len(list(rebuilt.network.parameters()))
    assert checkpoint["init_args"]["plans"]["configurations"]["3d_fullres"][FEATURE_INPUT_KEY]["sha256"] == sha

    # the cost of the feature pass, logged every epoch
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "nnFM feature pass (frozen anatomix" in log and "ms per training iteration" in log
    assert "SGD (momentum 0.99, Nesterov); lr 0.01" in log
    cost = json.loads((fold / "nnfm_feature_cost.json").read_text())
    assert cost["mean_over_epochs"]["feature_ms_per_train_iteration"] > 0

    (tmp_path / "here").mkdir()
    first = predict_held_back(data, env, tmp_path / "here", trainer, "nnUNetPlans", "3d_fullres", tta=False)

    # another machine: only the zip, nnFM installed, nothing in raw / preprocessed
    archive = tmp_path / "model.zip"
    run_cli(["nnUNetv2_export_model_to_zip", "-d", data["id"], "-o", archive, "-c", "3d_fullres", "-tr", trainer,
             "-p", "nnUNetPlans", "-f", 0], env)
    elsewhere = {name: tmp_path / "elsewhere" / name for name in ("raw", "preprocessed", "results")}
    for folder in elsewhere.values():
        folder.mkdir(parents=True)
    other = dict(env, **{f"nnUNet_{name}": str(folder) for name, folder in elsewhere.items()})
    run_cli(["nnUNetv2_install_pretrained_model_from_zip", archive], other)
    images, again = tmp_path / "images_elsewhere", tmp_path / "again"
    images.mkdir()
    for case in data["test"]:
        (images / f"{case}_0000.nii.gz").symlink_to(data["raw"] / "imagesTr" / f"{case}_0000.nii.gz")
    run_cli(["nnUNetv2_predict", "-i", images, "-o", again, "-d", data["id"], "-c", "3d_fullres", "-tr", trainer,
             "-p", "nnUNetPlans", "-f", 0, "-device", "cpu", "-npp", 0, "-nps", 0, "--disable_tta"], other)
    here, there = _predictions(first), _predictions(again)
    assert here.keys() == there.keys() and len(here) == len(data["test"])
    assert all(np.array_equal(here[k], there[k]) for k in here)


def test_nnunets_pretrained_weights_flag_is_checked_and_recorded(tmp_path, monkeypatch):
    """nnUNetv2_train -tr nnFMTrainer_DropGen -pretrained_weights FILE: nnU-Net loads FILE over the whole wrapper
    after initialize(); the provenance names it (before, it named only the feature encoder's weights) and a file
    of another network is refused before nnU-Net's own assert."""
    import hashlib
    import sys

    from nnfm.errors import CheckpointMismatchError

    trainer = _bare_trainer(_plans())
    trainer.feature_record, trainer.network, trainer.feature_report, trainer.fold, trainer.local_rank = (
        dict(RECORD, weights=None, sha256=None), _wrapper(), None, 0, 0)
    trainer.output_folder, trainer.print_to_log_file = str(tmp_path), lambda *a, **k: None
    checkpoint = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": _wrapper().state_dict()}, checkpoint)
    monkeypatch.setattr(sys, "argv", ["nnUNetv2_train", "999", "3d_fullres", "0", "-pretrained_weights",
                                      str(checkpoint)])
    trainer._load_feature_weights()
    recorded = json.loads((tmp_path / "nnfm_pretrained.json").read_text())["pretrained_weights"]
    assert recorded["weights"] == str(checkpoint) and "-pretrained_weights" in recorded["via"]
    assert recorded["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    torch.save({"network_weights": _plain_unet(1).state_dict()}, checkpoint)  # no feature input: another network
    with pytest.raises(CheckpointMismatchError, match="does not fit FeatureInputNetwork"):
        trainer._load_feature_weights()
