"""MAE (masked-image reconstruction) pretraining of the anatomix U-Net on nnU-Net preprocessed 3D data.

Masks and loss as nnssl's, learning, labels never read, case exclusion, strict anatomix-layout export,
resume after a kill, 2-process gloo DDP through the CLI. Data: a few real MSD Hippocampus volumes,
z-scored and written with nnU-Net's own dataset class (the layout nnUNetv2_plan_and_preprocess writes).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import LAYOUTS, write_preprocessed_cases
from nnfm.weights.checkpoint_io import read_state_dict
from nnfm.errors import ConfigurationError
from nnfm.networks.anatomix_unet import AnatomixUNet
from nnfm.pretraining.mae.cases import ImageReader, read_exclusions, select_cases
from nnfm.pretraining.mae.masking import block_mask, masked_mse
from nnfm.pretraining.mae.trainer import EXPORT, LATEST, MAEPretrainConfig, poly_lr, train_mae

LAYOUT = LAYOUTS / "anatomix_unet.json"
DATASET = "Dataset993_HippoMAE"
PATCH = (32, 32, 32)


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory) -> Path:
    """nnUNet_preprocessed/Dataset993_HippoMAE/{nnUNetPlans.json, nnUNetPlans_3d_fullres/*.b2nd} from 4 real cases.

    Written in-process, not the shared nnU-Net-planned dataset: the engine reads only this folder, and the
    CLI's defaults are checked against these exact plans (test_cli_defaults_from_the_plans_...).
    """
    root = tmp_path_factory.mktemp("preprocessed")
    folder = root / DATASET / "nnUNetPlans_3d_fullres"
    write_preprocessed_cases(folder, 4, label=1)
    (folder.parent / "nnUNetPlans.json").write_text(json.dumps({"configurations": {
        "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [40, 56, 40], "batch_size": 2}}}))
    return root


def data_folder(preprocessed: Path) -> Path:
    return preprocessed / DATASET / "nnUNetPlans_3d_fullres"


def tiny_config(out_dir, folder, **overrides) -> MAEPretrainConfig:
    settings = dict(out_dir=str(out_dir), data_folder=str(folder), patch=PATCH, batch_size=2, steps=4,
                    checkpoint_every=2, workers=0, bn_recalibration_batches=1, progress=False)
    settings.update(overrides)
    return MAEPretrainConfig(**settings)


# ---- masks, loss, schedule (nnssl BaseMAETrainer / MAEMSELoss / AbstractTrainer) -------------------
def test_block_masks_hide_three_quarters_of_16_cubed_blocks():
    mask = block_mask(3, (32, 64, 48), generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 32, 64, 48)
    blocks = mask.reshape(3, 2, 16, 4, 16, 3, 16)
    per_block = blocks.amin(dim=(2, 4, 6))
    assert torch.equal(per_block, blocks.amax(dim=(2, 4, 6)))        # every 16^3 block is all 0 or all 1
    assert per_block.reshape(3, -1).eq(0).sum(1).tolist() == [int(0.75 * 24)] * 3
    assert not torch.equal(mask[0], mask[1])                          # each sample has its own mask
    with pytest.raises(ValueError, match="multiple of the mask block"):
        block_mask(1, (40, 32, 32))


def test_loss_counts_only_masked_voxels():
    target = torch.zeros(1, 1, 32, 32, 32)
    mask = block_mask(1, (32, 32, 32), generator=torch.Generator().manual_seed(1))
    wrong_where_visible = mask * 5.0
    assert masked_mse(wrong_where_visible, target, mask) == 0
    assert masked_mse(torch.full_like(target, 2.0), target, mask) == pytest.approx(4.0)


def test_poly_schedule_and_nnssl_optimiser_defaults():
    config = MAEPretrainConfig(out_dir="x", data_folder="y", steps=100)
    assert (config.lr, config.momentum, config.weight_decay, config.grad_clip, config.mask_ratio,
            config.mask_block, config.patch) == (1e-2, 0.99, 3e-5, 12.0, 0.75, 16, (160, 160, 160))
    assert poly_lr(config, 0) == pytest.approx(1e-2)
    assert poly_lr(config, 50) == pytest.approx(1e-2 * 0.5 ** 0.9)


# ---- cases: exclusion and image-only reading ------------------------------------------------------
def test_exclusions_from_a_list_an_nnunet_splits_file_or_the_benchmark_marker(tmp_path, preprocessed):
    (tmp_path / "list.json").write_text(json.dumps(["hippocampus_001"]))
    (tmp_path / "splits.json").write_text(json.dumps([{"train": ["a"], "val": ["b", "c"]},
                                                      {"train": ["b"], "val": ["a"]}]))
    (tmp_path / "marker.json").write_text(json.dumps({"training_cases": ["a"], "held_out_test_cases": ["t1"]}))
    (tmp_path / "bad.json").write_text(json.dumps({"x": 1}))
    assert read_exclusions(tmp_path / "list.json") == ["hippocampus_001"]
    assert read_exclusions(tmp_path / "splits.json") == ["b", "c"]
    assert read_exclusions(tmp_path / "splits.json", fold=1) == ["a"]
    assert read_exclusions(tmp_path / "marker.json") == ["t1"]
    with pytest.raises(ConfigurationError, match="expected a JSON list"):
        read_exclusions(tmp_path / "bad.json")
    with pytest.raises(ConfigurationError, match="folds 0..1"):
        read_exclusions(tmp_path / "splits.json", fold=2)
    cases = select_cases(data_folder(preprocessed))[0]
    used, excluded = select_cases(data_folder(preprocessed), cases[:3] + ["not_there"])
    assert used == cases[3:] and excluded == cases[:3]
    with pytest.raises(ConfigurationError, match="nothing left"):
        select_cases(data_folder(preprocessed), cases)


def test_labels_are_never_opened_and_excluded_cases_never_read(preprocessed, tmp_path, monkeypatch):
    copy = tmp_path / "images_only"
    shutil.copytree(data_folder(preprocessed), copy)
    for seg in copy.glob("*_seg.b2nd"):
        seg.unlink()                               # nnU-Net's own load_case would fail on this folder
    cases = sorted(p.name[:-5] for p in copy.glob("*.b2nd"))
    opened = []
    load = ImageReader._load
    monkeypatch.setattr(ImageReader, "_load", lambda self, case: opened.append(case) or load(self, case))
    summary = train_mae(tiny_config(tmp_path / "run", copy, steps=2, exclude=tuple(cases[:2])))
    assert summary["step"] == 2 and summary["cases_used"] == 2 and summary["cases_excluded"] == cases[:2]
    assert opened and set(opened) <= set(cases[2:])
    assert not list(copy.glob("*_seg*"))


# ---- training ---------------------------------------------------------------------------------------
def test_twenty_steps_lower_the_masked_reconstruction_loss(preprocessed, tmp_path):
    summary = train_mae(tiny_config(tmp_path / "learn", data_folder(preprocessed), steps=20, checkpoint_every=20,
                                    bn_recalibration_batches=0))
    history = summary["loss_history"]
    assert len(history) == 20 and all(np.isfinite(history))
    assert np.mean(history[-5:]) < 0.92 * np.mean(history[:5]), history   # deterministic: 0.87 measured


@pytest.fixture(scope="module")
def straight_run(preprocessed, tmp_path_factory):
    out = tmp_path_factory.mktemp("mae_straight")
    return out, train_mae(tiny_config(out, data_folder(preprocessed)))


def test_export_is_the_anatomix_layout_and_loads_strictly(straight_run):
    out, summary = straight_run
    state = read_state_dict(out / EXPORT)[0]
    expected = json.loads(LAYOUT.read_text())["keys"]
    assert list(state) == list(expected)   # exact anatomix layout: same keys, same order
    for key, spec in expected.items():
        assert list(state[key].shape) == spec["shape"] and str(state[key].dtype) == f"torch.{spec['dtype']}", key
    AnatomixUNet().load_state_dict(state, strict=True)
    from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork
    from nnfm.weights import load_pretrained   # what nnFMTrainer does with nnFM_WEIGHTS=<path>
    report = load_pretrained(AnatomixSegmentationNetwork(1, 3).encoder, str(out / EXPORT))
    # pretrained on per-image z-scores (cases.py): the file says so, and fine-tuning then plans "zscore"
    assert report.ok and report.input_convention == "zscore"
    checkpoint = torch.load(out / LATEST, weights_only=True)
    assert checkpoint["step"] == 4 and checkpoint["loss_history"] == pytest.approx(summary["loss_history"])
    assert (out / "loss_curve.png").exists() and (out / "loss.csv").exists()
    # batch-norm statistics were re-estimated on unmasked patches: 1 batch, cumulative average
    assert int(state["model.1.num_batches_tracked"]) == 1


def test_resume_after_a_kill_continues_exactly_where_it_stopped(preprocessed, straight_run, tmp_path, monkeypatch):
    import nnfm.pretraining.mae.trainer as trainer
    out, straight = straight_run
    write_curve = trainer.write_loss_curve

    def killed_after_step_2(out_dir, history, **kwargs):   # the process dies right after its step-2 checkpoint
        write_curve(out_dir, history, **kwargs)
        if len(history) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "write_loss_curve", killed_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        train_mae(tiny_config(tmp_path / "split", data_folder(preprocessed)))
    monkeypatch.setattr(trainer, "write_loss_curve", write_curve)
    assert torch.load(tmp_path / "split" / LATEST, weights_only=True)["step"] == 2
    resumed = train_mae(tiny_config(tmp_path / "split", data_folder(preprocessed), resume=True))
    assert resumed["start_step"] == 2 and resumed["step"] == 4
    assert np.allclose(resumed["loss_history"], straight["loss_history"], atol=1e-6)
    a = read_state_dict(out / EXPORT)[0]
    b = read_state_dict(tmp_path / "split" / EXPORT)[0]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    with pytest.raises(ConfigurationError, match="different run settings"):
        train_mae(tiny_config(tmp_path / "split", data_folder(preprocessed), steps=6, resume=True, seed=1))


@pytest.mark.e2e
def test_two_process_gloo_ddp_run_through_the_cli(preprocessed, tmp_path):
    out = tmp_path / "ddp"
    held_out = sorted(p.name[:-5] for p in data_folder(preprocessed).glob("*.b2nd") if "_seg" not in p.name)[:1]
    (tmp_path / "test_cases.json").write_text(json.dumps(held_out))
    env = dict(os.environ, OMP_NUM_THREADS="1", nnUNet_preprocessed=str(preprocessed))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "nnfm.pretraining.cli", "mae", "-d", DATASET, "-c", "3d_fullres", "--out", str(out),
               "--exclude-split", str(tmp_path / "test_cases.json"), "--steps", "2", "--batch-size", "1",
               "--patch", *map(str, PATCH), "--checkpoint-every", "1", "--bn-recalibration-batches", "1",
               "--workers", "0", "--device", "cpu", "--no-progress"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["step"] == 2 and summary["cases_excluded"] == held_out
    assert np.isfinite(summary["loss_last"]) and torch.load(out / LATEST, weights_only=True)["step"] == 2
    AnatomixUNet().load_state_dict(read_state_dict(out / EXPORT)[0], strict=True)


def test_cli_defaults_from_the_plans_and_bad_input_without_a_traceback(preprocessed, tmp_path, monkeypatch):
    from nnfm.pretraining.cli import main
    from nnfm.pretraining.mae.plans import configuration_defaults
    assert configuration_defaults(data_folder(preprocessed)) == ((48, 64, 48), 2)
    with pytest.raises(SystemExit, match="nnFM_pretrain mae: --patch .* multiple of 16"):
        main(["mae", "--data-folder", str(data_folder(preprocessed)), "--out", str(tmp_path), "--patch", "40", "32",
              "32"])
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    with pytest.raises(SystemExit, match="nnFM_pretrain mae: all 4 cases .* excluded"):
        main(["mae", "-d", DATASET, "--out", str(tmp_path), "--exclude"] +
             sorted(p.name[:-5] for p in data_folder(preprocessed).glob("*.b2nd") if "_seg" not in p.name))
