"""Voxel SupCon pretraining: loss sanity, learning, checkpoints, resume, 2-process gloo DDP (CPU, 32^3)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnfm.networks.anatomix_unet import AnatomixUNet
from nnfm.networks.segmentation_unet import AnatomixSegmentationNetwork
from nnfm.pretraining.checkpoints import EXPORT, LATEST
from nnfm.pretraining.supcon import gather_voxels, sample_voxel_indices, supcon_loss
from nnfm.pretraining.supcon_model import SupConPretrainingModel, SupConSettings
from nnfm.pretraining.synth import SyntheticPairGenerator
from nnfm.pretraining.synth_trainer import SynthPretrainConfig, train_synth

LAYOUT = Path(__file__).resolve().parents[1].parent / "shared" / "checkpoint_layouts" / "anatomix_unet.json"
SIZE = 32


def tiny_config(out_dir, **overrides) -> SynthPretrainConfig:
    settings = dict(out_dir=str(out_dir), steps=4, batch_size=1, size=SIZE, workers=0, seed=0, lr=1e-3,
                    warmup_steps=0, voxels_per_layer=128, head_dim=64, checkpoint_every=2, progress=False)
    settings.update(overrides)
    return SynthPretrainConfig(**settings)


# ---- loss ---------------------------------------------------------------------------------
def test_supcon_prefers_features_that_follow_labels():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (2, 256), generator=generator)
    prototypes = torch.randn(6, 32, generator=generator)
    aligned = prototypes[labels] + 0.3 * torch.randn(2, 256, 32, generator=generator)
    shuffled_labels = labels[:, torch.randperm(256, generator=generator)]
    random_features = torch.randn(2, 256, 32, generator=generator)
    good = supcon_loss(aligned, labels)
    assert good < supcon_loss(aligned, shuffled_labels) - 0.5
    assert good < supcon_loss(random_features, labels) - 0.5


def test_supcon_ignores_anchors_without_positives_and_keeps_graph():
    features = torch.randn(1, 4, 8, requires_grad=True)
    loss = supcon_loss(features, torch.tensor([[0, 1, 2, 3]]))
    loss.backward()   # no positives at all: zero loss that still backpropagates
    assert loss.item() == 0.0 and features.grad is not None


def test_balanced_sampling_finds_small_labels_and_gather_matches_indexing():
    labels = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    labels[0, :2, :2, :2] = 1   # 8 of 4096 voxels
    generator = torch.Generator().manual_seed(0)
    index = sample_voxel_indices(labels, 512, generator)
    share = (labels.reshape(1, -1).gather(1, index) == 1).float().mean()
    assert 0.35 < share < 0.65
    # large volumes go through the candidate-subsampling path: still about balanced
    big = torch.zeros(1, 64, 64, 64, dtype=torch.long)
    big[0, :8, :8, :8] = 1      # 0.2 % of the volume
    picked = big.reshape(1, -1).gather(1, sample_voxel_indices(big, 512, generator))
    assert 0.35 < (picked == 1).float().mean() < 0.65
    features = torch.randn(1, 3, 16, 16, 16)
    gathered = gather_voxels(features, index)
    assert torch.equal(gathered[0, 5], features.reshape(1, 3, -1)[0, :, index[0, 5]])


def test_model_loss_is_finite_and_reaches_every_encoder_parameter():
    sample = SyntheticPairGenerator(seed=0, size=SIZE).sample(0)
    model = SupConPretrainingModel(settings=SupConSettings(voxels_per_layer=64, head_dim=32))
    loss, per_tap = model(sample["view1"][None], sample["view2"][None], sample["labels"][None],
                          torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and set(per_tap) == {"out", "dec2", "dec4"}
    assert all(p.grad is not None for p in model.encoder.parameters())


# ---- training runs (shared, to keep the suite short) ----------------------------------------
def test_a_few_steps_lower_the_loss():
    """Optimiser + loss + heads plumbing: repeated steps on fixed samples lower the loss.

    Fixed samples and fixed voxel positions per step make this deterministic; on the endless
    synthetic stream the decrease only shows after tens of steps (see the pretraining report).
    """
    torch.manual_seed(0)
    model = SupConPretrainingModel(settings=SupConSettings(voxels_per_layer=128, head_dim=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = SyntheticPairGenerator(seed=0, size=SIZE)
    samples = [generator.sample(i) for i in range(2)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    history = []
    for step in range(8):
        loss, _ = model(batch["view1"], batch["view2"], batch["labels"], torch.Generator().manual_seed(step % 2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-3:]) / 3 < sum(history[:3]) / 3 - 0.02, history


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_run")
    config = tiny_config(out, steps=4, checkpoint_every=2)
    return out, config, train_synth(config)


def test_training_run_records_finite_losses(trained_run):
    out, config, summary = trained_run
    history = summary["loss_history"]
    assert len(history) == 4 and all(torch.isfinite(torch.tensor(history)))
    assert torch.load(out / LATEST, weights_only=True)["loss_history"] == pytest.approx(history)


def test_exported_weights_load_strictly_everywhere(trained_run):
    out = trained_run[0]
    state = torch.load(out / EXPORT, weights_only=True)
    expected = json.loads(LAYOUT.read_text())["keys"]
    assert list(state) == list(expected)   # exact anatomix layout: same keys, same order
    for key, spec in expected.items():
        assert list(state[key].shape) == spec["shape"] and str(state[key].dtype) == f"torch.{spec['dtype']}", key
    AnatomixUNet().load_state_dict(state, strict=True)
    AnatomixSegmentationNetwork(1, 3).encoder.load_state_dict(state, strict=True)
    from nnfm.weights import load_pretrained   # what nnFMTrainer does with nnFM_WEIGHTS=<path>
    report = load_pretrained(AnatomixSegmentationNetwork(1, 3).encoder, str(out / EXPORT))
    assert report.ok
    checkpoint = torch.load(out / LATEST, weights_only=True)
    assert checkpoint["step"] == 4 and not any(k.startswith("model.") for k in checkpoint["heads"])
    assert {"step", "model", "heads", "optimizer", "rng", "settings", "loss_history"} <= set(checkpoint)
    assert (out / "loss_curve.png").exists() and (out / "loss.csv").exists()


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = train_synth(tiny_config(tmp_path / "straight", steps=4))
    first = train_synth(tiny_config(tmp_path / "split", steps=2))
    assert first["step"] == 2
    resumed = train_synth(tiny_config(tmp_path / "split", steps=4, resume=True))
    assert resumed["start_step"] == 2 and resumed["step"] == 4
    assert torch.load(tmp_path / "split" / LATEST, weights_only=True)["step"] == 4
    assert torch.allclose(torch.tensor(resumed["loss_history"]), torch.tensor(straight["loss_history"]), atol=1e-4)
    a = torch.load(tmp_path / "straight" / EXPORT, weights_only=True)
    b = torch.load(tmp_path / "split" / EXPORT, weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)
    with pytest.raises(ValueError, match="different run settings"):
        train_synth(tiny_config(tmp_path / "split", steps=6, resume=True, seed=1))


def test_two_process_gloo_ddp_run(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "nnfm.pretraining.cli", "synth", "--out", str(out), "--steps", "2", "--batch-size", "1",
               "--size", str(SIZE), "--workers", "0", "--voxels-per-layer", "64", "--head-dim", "32",
               "--checkpoint-every", "1", "--device", "cpu", "--no-progress"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["step"] == 2
    state = torch.load(out / EXPORT, weights_only=True)
    AnatomixUNet().load_state_dict(state, strict=True)
    assert torch.load(out / LATEST, weights_only=True)["step"] == 2
