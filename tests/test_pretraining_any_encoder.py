"""nnFM's pretraining engines on registered encoders other than anatomix (issue 27, deliverable 3): synthetic SupCon
and MAE on nnU-Net's own PlainConvUNet (registry ``plainconv_unet``), exported as a state dict nnU-Net's own plans
start from (nnFMTrainer_nnUNetPlans, nnfm/weights/shape_fit.py) with the intensities it saw recorded."""
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnfm.errors import ConfigurationError
from nnfm.pretraining.checkpoints import LATEST
from nnfm.pretraining.supcon_model import SupConPretrainingModel, SupConSettings
from nnfm.pretraining.synth_trainer import SynthPretrainConfig, train_synth, zscore_per_image
from nnfm.pretraining.taps import ModuleTaps, pretraining_network, pretraining_taps
from nnfm.weights.checkpoint_io import read_state_dict
from nnfm.weights.input_convention import recorded_convention
from nnfm.weights.shape_fit import load_fitting

SIZE = 32
ENCODER = "plainconv_unet"


def nnunet_hippocampus_network(num_classes: int = 3) -> PlainConvUNet:
    """What nnU-Net 2.8.1 plans for MSD Hippocampus (nnUNetPlans 3d_fullres: 4 stages, 32-256, 3^3 kernels)."""
    return PlainConvUNet(1, 4, [32, 64, 128, 256], torch.nn.Conv3d, [[3, 3, 3]] * 4, [[1, 1, 1]] + [[2, 2, 2]] * 3,
                         [2, 2, 2, 2], num_classes, [2, 2, 2], conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
                         norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
                         nonlin_kwargs={"inplace": True}, deep_supervision=True)


def tiny_config(out_dir, **overrides) -> SynthPretrainConfig:
    settings = dict(out_dir=str(out_dir), encoder=ENCODER, steps=4, batch_size=1, size=SIZE, workers=0, seed=0,
                    voxels_per_layer=64, head_dim=32, checkpoint_every=2, progress=False)
    settings.update(overrides)
    return SynthPretrainConfig(**settings)


def test_default_taps_mirror_anatomixs_six_on_a_dna_unet():
    tapper = pretraining_taps(ENCODER, (SIZE,) * 3)
    assert isinstance(tapper, ModuleTaps) and isinstance(tapper.network, PlainConvUNet)
    taps = tapper.default_taps()
    # 5 stages: the stage above the bottleneck, the bottleneck, then every decoder level to full resolution
    assert taps == ("encoder.stages.3", "encoder.stages.4", "decoder.stages.0", "decoder.stages.1",
                    "decoder.stages.2", "decoder.stages.3")
    assert [tapper.channels(t) for t in taps] == [256, 320, 256, 128, 64, 32]
    x = torch.randn(2, 1, SIZE, SIZE, SIZE)
    features = tapper.features(x, taps)
    assert [f.shape[-1] for f in features.values()] == [4, 2, 4, 8, 16, 32]
    assert not tapper.network._forward_hooks and not any(m._forward_hooks for m in tapper.network.modules())


def test_a_tap_that_is_not_a_submodule_names_the_defaults():
    tapper = pretraining_taps(ENCODER, (SIZE,) * 3)
    with pytest.raises(ConfigurationError, match="not a submodule.*decoder.stages.3"):
        SupConPretrainingModel(settings=SupConSettings(taps=("decoder.nowhere",)), tapper=tapper)


def test_views_are_zscored_per_image_as_nnunets_zscore_normalization():
    x = torch.rand(2, 1, 8, 8, 8) * torch.tensor([3.0, 0.5]).view(2, 1, 1, 1, 1) + 7
    z = zscore_per_image(x)
    assert torch.allclose(z.mean((2, 3, 4)), torch.zeros(2, 1), atol=1e-5)
    assert torch.allclose(z.std((2, 3, 4)), torch.ones(2, 1), atol=1e-4)
    assert torch.equal(zscore_per_image(torch.ones(1, 1, 4, 4, 4)), torch.zeros(1, 1, 4, 4, 4))  # no division by 0


def test_synthetic_supcon_on_nnunets_network_feeds_zscores_and_exports_what_nnunet_plans_load(tmp_path, monkeypatch):
    import nnfm.pretraining.taps as taps
    seen = []
    features = taps.ModuleTaps.features

    def recording(self, x, tap_list):
        if x.std() > 0:  # not the zero probe that reads each tap's channels
            seen.append((float(x.mean()), float(x.std())))
        return features(self, x, tap_list)
    monkeypatch.setattr(taps.ModuleTaps, "features", recording)
    summary = train_synth(tiny_config(tmp_path))
    # what the network saw: per-image z-scores (nnU-Net's normalisation), not the [0, 1] synthetic views
    assert len(seen) == 4 and all(abs(m) < 1e-3 and abs(s - 1) < 1e-2 for m, s in seen)
    assert summary["input_convention"] == "zscore" and len(summary["loss_history"]) == 4
    path = tmp_path / f"{ENCODER}_synth.pth"
    state = read_state_dict(path)[0]
    assert recorded_convention(path) == "zscore"
    assert set(state) == set(pretraining_network(ENCODER).state_dict())   # the registry network's own layout
    # nnU-Net's own Hippocampus plans start from it: every tensor outside the segmentation layers fits
    network = nnunet_hippocampus_network()
    report = load_fitting(network, path, "sha")
    assert report.loaded_fraction == 1.0 and report.input_convention == "zscore"
    assert torch.equal(network.state_dict()["encoder.stages.3.0.convs.1.conv.weight"],
                       state["encoder.stages.3.0.convs.1.conv.weight"])
    checkpoint = torch.load(tmp_path / LATEST, weights_only=True)
    assert checkpoint["settings"]["encoder"] == ENCODER and "decoder-stages-3" in {k.split(".")[0]
                                                                                   for k in checkpoint["heads"]}


def test_resume_of_another_encoder_continues_exactly(tmp_path, monkeypatch):
    import nnfm.pretraining.synth_trainer as trainer
    straight = train_synth(tiny_config(tmp_path / "straight"))
    write_curve = trainer.write_loss_curve

    def killed_after_step_2(out_dir, history):
        write_curve(out_dir, history)
        if len(history) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "write_loss_curve", killed_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        train_synth(tiny_config(tmp_path / "split"))
    monkeypatch.setattr(trainer, "write_loss_curve", write_curve)
    resumed = train_synth(tiny_config(tmp_path / "split", resume=True))
    assert resumed["start_step"] == 2
    assert torch.allclose(torch.tensor(resumed["loss_history"]), torch.tensor(straight["loss_history"]), atol=1e-4)
    with pytest.raises(ValueError, match="different run settings.*encoder"):
        train_synth(tiny_config(tmp_path / "split", steps=6, resume=True, encoder="anatomix"))


def test_mae_on_nnunets_network_reconstructs_through_its_own_segmentation_layer(tmp_path):
    from conftest import write_preprocessed_cases
    from nnfm.pretraining.mae.trainer import MAEPretrainConfig, train_mae

    folder = tmp_path / "Dataset993_HippoMAE" / "nnUNetPlans_3d_fullres"
    write_preprocessed_cases(folder, 2, label=1)
    config = MAEPretrainConfig(out_dir=str(tmp_path / "mae"), data_folder=str(folder), encoder=ENCODER,
                               patch=(32, 32, 32), batch_size=1, steps=2, checkpoint_every=2, workers=0,
                               progress=False)
    summary = train_mae(config)
    path = tmp_path / "mae" / f"{ENCODER}_mae.pth"
    assert summary["weights"] == str(path) and recorded_convention(path) == "zscore"
    # nnssl's rule: the encoder transfers, the reconstruction decoder does not (nnfm/weights/transfer.py)
    report = load_fitting(nnunet_hippocampus_network(), path, "sha")
    assert report.loaded and all(k.startswith("encoder.") for k in report.loaded) and 0 < report.loaded_fraction < 1
    assert "reconstruction" in report.initialised["decoder.stages.0.convs.0.conv.weight"]
    # a fixed-topology network loads whole files strictly: it refuses this one and names the trainer that takes it
    from nnfm.errors import CheckpointMismatchError
    from nnfm.weights import load_pretrained, pretrained_target
    with pytest.raises(CheckpointMismatchError, match="reconstruction.*nnFMTrainer_nnUNetPlans"):
        load_pretrained(pretrained_target(pretraining_network(ENCODER)), path, family=("nnunet_plainconv",))
    bad = MAEPretrainConfig(out_dir=str(tmp_path / "bad"), data_folder=str(folder), encoder="resenc_l",
                            patch=(48, 48, 48), steps=1, workers=0, progress=False)
    with pytest.raises(ConfigurationError, match="multiple of 32"):
        train_mae(bad)
    assert not (tmp_path / "bad").exists()  # refused from the registry's stride before any folder, data or model
