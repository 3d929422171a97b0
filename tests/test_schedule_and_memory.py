import pytest
import torch

from nnfm.networks import AnatomixSegmentationNetwork
from nnfm.planning.memory import estimate_training_memory
from nnfm.training.schedule import FineTuneLRScheduler, FineTuneSchedule


def test_schedule_phases_head_warmup_then_full_warmup_then_poly_decay():
    schedule = FineTuneSchedule.from_fractions(100, 0.05, 0.05)
    assert (schedule.head_warmup_epochs, schedule.full_warmup_epochs) == (5, 5)
    assert schedule.encoder_frozen(0) and schedule.encoder_frozen(4) and not schedule.encoder_frozen(5)
    assert schedule.lr_factor(0, is_encoder=True) == 0
    assert schedule.lr_factor(4, is_encoder=False) == pytest.approx(1.0)
    assert schedule.lr_factor(5, is_encoder=True) == pytest.approx(0.2)
    assert schedule.lr_factor(10, is_encoder=True) == pytest.approx(1.0)
    decay = [schedule.lr_factor(e, False) for e in range(10, 100)]
    assert all(a > b for a, b in zip(decay, decay[1:])) and decay[-1] < 0.05


def test_short_budgets_get_no_warmup():
    assert FineTuneSchedule.from_fractions(5, 0.05, 0.05) == FineTuneSchedule(5, 0, 0)


def test_scheduler_keeps_encoder_multiplier_in_every_phase():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0, "is_encoder": False},
                                 {"params": [b], "lr": 0.1, "is_encoder": True}], lr=1.0)
    scheduler = FineTuneLRScheduler(optimizer, FineTuneSchedule(20, 2, 2))
    scheduler.step(3)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1.0, 0.1])
    scheduler.step(0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.0])


def test_memory_estimate_scales_with_patch_and_batch():
    factory = lambda: AnatomixSegmentationNetwork(1, 3, True)  # noqa: E731
    small = estimate_training_memory(factory, 1, (32, 32, 32), 4)
    large = estimate_training_memory(factory, 1, (64, 64, 64), 4)
    ratio = large.activation_elements_per_sample / small.activation_elements_per_sample
    assert 7.5 < ratio < 8.5  # activations grow with the number of voxels
    assert large.total_bytes(4) - large.total_bytes(2) == large.activation_bytes(2)
    assert small.parameter_elements == sum(p.numel() for p in factory().parameters())
    assert large.max_batch_size(large.total_bytes(3)) == 3


def _schedule_of(trainer_class, num_epochs: int) -> FineTuneSchedule:
    # fine_tune_schedule reads only these attributes: no plans or dataset needed
    stand_in = type("StandIn", (), {"num_epochs": num_epochs, "use_pretrained": trainer_class.use_pretrained,
                                    "head_warmup_fraction": trainer_class.head_warmup_fraction,
                                    "full_warmup_fraction": trainer_class.full_warmup_fraction})()
    return trainer_class.fine_tune_schedule(stand_in)


def test_no_warmup_variant_differs_from_scratch_only_in_its_weights():
    from nnfm_trainers.nnfm_trainer import nnFMTrainer
    from nnfm_trainers.nnfm_trainer_variants import nnFMTrainer_noWarmup, nnFMTrainer_scratch
    assert _schedule_of(nnFMTrainer, 20) == FineTuneSchedule(20, 1, 1)
    assert _schedule_of(nnFMTrainer_noWarmup, 20) == _schedule_of(nnFMTrainer_scratch, 20) == FineTuneSchedule(20)
    assert nnFMTrainer_noWarmup.use_pretrained and not nnFMTrainer_scratch.use_pretrained
