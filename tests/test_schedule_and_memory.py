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
    # fine_tune_schedule reads only class attributes and num_epochs: no plans or dataset needed
    stand_in = trainer_class.__new__(trainer_class)
    stand_in.num_epochs = num_epochs
    return stand_in.fine_tune_schedule()


def test_scratch_and_sgd_variants_differ_from_their_twins_only_in_one_thing():
    from nnfm_trainers.nnfm_trainer import nnFMTrainer
    from nnfm_trainers.nnfm_trainer_variants import (nnFMTrainer_Adam, nnFMTrainer_headWarmup, nnFMTrainer_noWarmup,
                                                     nnFMTrainer_scratch, nnFMTrainer_SGD)
    # the default recipe is anatomix's: no frozen or warm-up epochs, cosine decay
    assert _schedule_of(nnFMTrainer, 20) == _schedule_of(nnFMTrainer_scratch, 20) == \
        _schedule_of(nnFMTrainer_Adam, 20) == FineTuneSchedule(20, decay="cosine")
    assert nnFMTrainer.use_pretrained and not nnFMTrainer_scratch.use_pretrained
    assert _schedule_of(nnFMTrainer_SGD, 20) == _schedule_of(nnFMTrainer_noWarmup, 20) == FineTuneSchedule(20)
    assert _schedule_of(nnFMTrainer_headWarmup, 20) == FineTuneSchedule(20, 1, 1)


def test_cosine_decay_equals_torch_cosine_annealing_stepped_per_epoch():
    # the anatomix authors' schedule: CosineAnnealingLR(T_max=n_epochs), one step per epoch
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=2e-4)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    ours = FineTuneSchedule(10, decay="cosine")
    for epoch in range(10):
        assert 2e-4 * ours.lr_factor(epoch, is_encoder=True) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    with pytest.raises(ValueError, match="decay must be"):
        FineTuneSchedule(10, decay="linear")


def _optimizer_of(trainer_class):
    # build_optimizer reads only these attributes (configure_optimizers first loads the weights): no plans needed
    net = AnatomixSegmentationNetwork(1, 3, True)
    stand_in = trainer_class.__new__(trainer_class)
    recipe = trainer_class.recipe()  # what __init__ takes from it
    stand_in.__dict__.update(network=net, is_ddp=False, num_epochs=20, loaded_family=None,
                             initial_lr=recipe.initial_lr(trainer_class.use_pretrained),
                             weight_decay=recipe.weight_decay, print_to_log_file=lambda *args, **kwargs: None)
    return trainer_class.build_optimizer(stand_in)


def test_recipes_build_their_authors_optimiser_and_schedule():
    from nnfm_trainers.nnfm_trainer_variants import nnFMTrainer_Adam, nnFMTrainer_nnssl, nnFMTrainer_SGD
    adam, adam_schedule = _optimizer_of(nnFMTrainer_Adam)
    assert type(adam) is torch.optim.Adam  # anatomix: Adam 2e-4, no weight decay, cosine, no warm-up
    assert {g["initial_lr"] for g in adam.param_groups} == {2e-4} and adam.defaults["weight_decay"] == 0
    assert adam_schedule.schedule == FineTuneSchedule(20, decay="cosine")
    sgd, sgd_schedule = _optimizer_of(nnFMTrainer_SGD)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.99 and sgd.defaults["nesterov"]
    assert {g["initial_lr"] for g in sgd.param_groups} == {1e-2} and sgd_schedule.schedule == FineTuneSchedule(20)
    nnssl, nnssl_schedule = _optimizer_of(nnFMTrainer_nnssl)  # nnU-Net master PretrainedTrainer: 1e-3, 5% warm-up
    assert {g["initial_lr"] for g in nnssl.param_groups} == {1e-3}
    assert nnssl_schedule.schedule == FineTuneSchedule(20, 0, 1)
    # ... and nnU-Net's weight decay 3e-5 (issue 26: it inherited the anatomix recipe's 0 before)
    assert type(nnssl) is torch.optim.SGD and nnssl.defaults["weight_decay"] == 3e-5


def test_resenc_l_fine_tunes_with_pretrained_trainers_weight_decay_and_scratch_lr():
    """nnU-Net master's PretrainedTrainer (the ResEnc-L recipe's source): SGD 1e-3, weight decay 3e-5, 1e-2 from
    scratch, deep supervision off. Before issue 26 the trainer ran weight decay 0 while its docstring said 3e-5."""
    from nnfm_trainers.nnfm_resenc_trainer import nnFMTrainer_ResEncL, nnFMTrainer_ResEncL_scratch
    recipe = nnFMTrainer_ResEncL.recipe()
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum) == ("SGD", 1e-3, 3e-5, 0.99)
    assert recipe.initial_lr(nnFMTrainer_ResEncL.use_pretrained) == 1e-3
    assert recipe.initial_lr(nnFMTrainer_ResEncL_scratch.use_pretrained) == 1e-2
    assert not recipe.deep_supervision


def test_the_weights_family_sets_the_vit_encoder_lr_before_the_optimiser_exists():
    """The encoder lr depends on the weights' family: the weights are loaded before the optimiser is built, so
    the optimiser is made once with the right lr (before: built with the random-init lr, then patched)."""
    from types import SimpleNamespace

    from nnfm.networks.dinov3_segmentation import DINOv3SegmentationNetwork
    from nnfm_trainers.nnfm_vit_trainer_variants import nnFMTrainer_DINOv3_S

    class StandIn(nnFMTrainer_DINOv3_S):
        def _load_pretrained_encoder(self, net):  # what loading official DINOv3 weights reports
            self.pretrained_report = SimpleNamespace(family="dinov3_vit")
            self.loaded_family = "dinov3_vit"

        def print_to_log_file(self, *args, **kwargs):
            pass

    net = DINOv3SegmentationNetwork(1, 2, vit="vit_small_patch16_dinov3_qkvb",
                                    vit_kwargs={"embed_dim": 32, "depth": 4, "num_heads": 2}, input_norm="nnunet")
    trainer = StandIn.__new__(StandIn)
    trainer.__dict__.update(network=net, is_ddp=False, num_epochs=20, weight_decay=0.05, _resuming=False,
                            _network_prepared=False, loaded_family=None, use_bf16=False,
                            initial_lr=StandIn.recipe().lr,
                            device=torch.device("cpu"), configuration_name="2d",
                            configuration_manager=SimpleNamespace(patch_size=[32, 32]))
    optimizer, _ = trainer.configure_optimizers()
    encoder_lrs = {g["initial_lr"] for g in optimizer.param_groups if g.get("is_encoder")}
    assert encoder_lrs == {StandIn.recipe().encoder_lr["dinov3_vit"]} != {StandIn.recipe().lr}


def _reference_lr_factors(num_epochs: int, frozen: int, warmup: int, decay: str, is_encoder: bool) -> list:
    """lr factor per epoch as both former schedules defined it, written out from their definitions.

    nnFMTrainer's FineTuneSchedule: ``frozen`` head warm-up epochs (encoder 0, the rest (k+1)/frozen), then
    ``warmup`` epochs of linear warm-up ((k+1)/warmup), then decay to 0. The ViT trainers' WarmupDecaySchedule:
    ``frozen_encoder_epochs`` likewise, then a linear warm-up "from 1/warmup to 1", then decay. The decay is
    taken from independent implementations over the epochs left: nnU-Net's PolyLRScheduler (stepped with the
    epoch, as nnUNetTrainer does) or torch's CosineAnnealingLR (stepped once per epoch, as anatomix does).
    """
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    curve = [0.0 if is_encoder else (k + 1) / frozen for k in range(frozen)]
    curve += [(k + 1) / warmup for k in range(warmup)]
    decay_epochs = num_epochs - frozen - warmup
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    if decay == "poly":
        poly = PolyLRScheduler(optimizer, 1.0, decay_epochs)
        for epoch in range(decay_epochs):
            poly.step(epoch)
            curve.append(optimizer.param_groups[0]["lr"])
    else:
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=decay_epochs)
        for _ in range(decay_epochs):
            curve.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            cosine.step()
    return curve


def _vit_trainers():
    from nnfm_trainers.nnfm_primus_trainer import nnFMTrainer_Primus, nnFMTrainer_Primus_scratch
    from nnfm_trainers.nnfm_vit_trainer_variants import nnFMTrainer_MedDINOv3, nnFMTrainer_MedDINOv3_scratch

    class frozen_head(nnFMTrainer_MedDINOv3):  # the former frozen_encoder_fraction = 0.1
        recipe_changes = {"head_warmup_fraction": 0.1}

    class frozen_head_scratch(frozen_head):
        use_pretrained = False

    return nnFMTrainer_MedDINOv3, nnFMTrainer_MedDINOv3_scratch, nnFMTrainer_Primus, nnFMTrainer_Primus_scratch, \
        frozen_head, frozen_head_scratch


# (trainer, epochs) -> (frozen, warm-up epochs, decay) of the former schedules: nnFMTrainer's from its
# fractions (rounded, none when they fill the run); the ViT trainers' warm-up 5% also from random init,
# their frozen epochs only with pretrained weights
UNIFIED_CASES = {
    ("nnFMTrainer", 100): (0, 0, "cosine"), ("nnFMTrainer_scratch", 100): (0, 0, "cosine"),
    ("nnFMTrainer_SGD", 100): (0, 0, "poly"), ("nnFMTrainer_nnssl", 100): (0, 5, "poly"),
    ("nnFMTrainer_nnssl", 30): (0, 2, "poly"), ("nnFMTrainer_headWarmup", 100): (5, 5, "poly"),
    ("nnFMTrainer_headWarmup", 20): (1, 1, "poly"), ("nnFMTrainer_headWarmup", 2): (0, 0, "poly"),
    ("nnFMTrainer_MedDINOv3", 100): (0, 5, "poly"), ("nnFMTrainer_MedDINOv3", 10): (0, 0, "poly"),
    ("nnFMTrainer_MedDINOv3", 1): (0, 0, "poly"), ("nnFMTrainer_MedDINOv3_scratch", 100): (0, 5, "poly"),
    ("nnFMTrainer_Primus", 40): (0, 2, "poly"), ("nnFMTrainer_Primus_scratch", 40): (0, 2, "poly"),
    ("frozen_head", 100): (10, 5, "poly"), ("frozen_head", 20): (2, 1, "poly"),
    ("frozen_head_scratch", 100): (0, 5, "poly"),
}


def test_one_schedule_reproduces_the_former_cnn_and_vit_lr_curves():
    from nnfm_trainers import nnfm_trainer, nnfm_trainer_variants
    trainers = {cls.__name__: cls for cls in (nnfm_trainer.nnFMTrainer, *_vit_trainers(), *(
        getattr(nnfm_trainer_variants, n) for n in ("nnFMTrainer_scratch", "nnFMTrainer_SGD", "nnFMTrainer_nnssl",
                                                    "nnFMTrainer_headWarmup")))}
    for (name, epochs), (frozen, warmup, decay) in UNIFIED_CASES.items():
        schedule = _schedule_of(trainers[name], epochs)
        assert type(schedule) is FineTuneSchedule, name
        for is_encoder in (False, True):
            expected = _reference_lr_factors(epochs, frozen, warmup, decay, is_encoder)
            got = [schedule.lr_factor(epoch, is_encoder) for epoch in range(epochs)]
            assert got == pytest.approx(expected, abs=1e-12), (name, epochs, is_encoder)
        assert [schedule.encoder_frozen(e) for e in range(epochs)] == [e < frozen for e in range(epochs)], name
    # the scheduler nnU-Net steps once per epoch applies the factors to each group's own base lr
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [a], "lr": 3e-4, "is_encoder": False},
                                   {"params": [b], "lr": 3e-5, "is_encoder": True}])
    scheduler = FineTuneLRScheduler(optimizer, _schedule_of(trainers["frozen_head"], 100))
    decoder, encoder = (_reference_lr_factors(100, 10, 5, "poly", is_encoder) for is_encoder in (False, True))
    for epoch in range(100):
        scheduler.step(epoch)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
            [3e-4 * decoder[epoch], 3e-5 * encoder[epoch]], abs=1e-15)
