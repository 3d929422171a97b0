"""Learning-rate schedule for fine-tuning an encoder inside nnU-Net: one class for every nnFM trainer.

Three phases, in epochs:
  1. head warm-up: encoder frozen (factor 0), heads/new layers ramp up linearly to their lr;
  2. full warm-up: everything trains, the lr ramps up linearly (protects pretrained features from
     the first large, noisy gradients of randomly initialised heads; AdamW ViT recipes use it too);
  3. decay to 0 at the last epoch: nnU-Net's polynomial decay (exponent 0.9), or cosine (as
     torch's CosineAnnealingLR with T_max = the decay epochs, stepped once per epoch); or "constant".
Each param group keeps its own base lr, so an encoder lr multiplier (or layer-wise decay) survives
all phases. nnFMTrainer's recipes and the ViT recipe (MedDINOv3 / Primus: linear warm-up then poly)
are settings of the same schedule (``trainers/nnfm_trainer*.py``, ``trainers/nnfm_vit_trainer.py``).
"""
import math
from dataclasses import dataclass

from torch.optim.lr_scheduler import _LRScheduler

from nnfm.conventions import LR_DECAYS


@dataclass(frozen=True)
class FineTuneSchedule:
    num_epochs: int
    head_warmup_epochs: int = 0
    full_warmup_epochs: int = 0
    exponent: float = 0.9
    decay: str = "poly"

    def __post_init__(self):
        if self.decay not in LR_DECAYS:
            raise ValueError(f"decay must be one of {LR_DECAYS}, not {self.decay!r}")

    @classmethod
    def from_fractions(cls, num_epochs: int, head_fraction: float, full_fraction: float,
                       decay: str = "poly") -> "FineTuneSchedule":
        # short runs (smoke tests, CPU budgets) get no warm-up rather than a phase of 0.x epochs
        head = int(round(num_epochs * head_fraction))
        full = int(round(num_epochs * full_fraction))
        if head + full >= num_epochs:
            head = full = 0
        return cls(num_epochs, head, full, decay=decay)

    def encoder_frozen(self, epoch: int) -> bool:
        return epoch < self.head_warmup_epochs

    def lr_factor(self, epoch: int, is_encoder: bool) -> float:
        if epoch < self.head_warmup_epochs:
            return 0.0 if is_encoder else (epoch + 1) / self.head_warmup_epochs
        warm_end = self.head_warmup_epochs + self.full_warmup_epochs
        if epoch < warm_end:
            return (epoch - self.head_warmup_epochs + 1) / self.full_warmup_epochs
        progress = min(1.0, (epoch - warm_end) / max(1, self.num_epochs - warm_end))
        if self.decay == "constant":  # e.g. LVM-Med's recipe (no scheduler)
            return 1.0
        if self.decay == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return (1 - progress) ** self.exponent


class FineTuneLRScheduler(_LRScheduler):
    """Drop-in for nnU-Net's PolyLRScheduler: ``step(epoch)`` sets every group's lr."""

    def __init__(self, optimizer, schedule: FineTuneSchedule):
        self.schedule = schedule
        self.base_lrs_by_group = [g["initial_lr"] if "initial_lr" in g else g["lr"] for g in optimizer.param_groups]
        self.ctr = 0
        super().__init__(optimizer, -1)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        for group, base in zip(self.optimizer.param_groups, self.base_lrs_by_group):
            group["lr"] = base * self.schedule.lr_factor(current_step, group.get("is_encoder", False))

    def get_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]
