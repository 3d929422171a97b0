"""Which plans each benchmarked trainer trains on, and who makes them.

Extend ``TRAINERS`` when nnFM gains encoders (a 2d or another 3d planner): one row per trainer.
"""
from dataclasses import dataclass
from typing import Optional

from planners.plan_and_preprocess import plans_name_for

from nnfm.benchmark.profiles import Budget


@dataclass(frozen=True)
class TrainerSpec:
    plans: str
    encoder: Optional[str]               # nnFM planner encoder (nnFM_plan_and_preprocess -e); None: nnU-Net's planner
    budget_class: Optional[str] = None   # same trainer honouring nnFM budget variables, if the trainer itself does not
    pretrained: bool = False             # loads pretrained encoder weights (nnFM_WEIGHTS applies)


TRAINERS = {
    "nnUNetTrainer": TrainerSpec("nnUNetPlans", None, budget_class="nnUNetTrainer_nnFMBudget"),
    "nnFMTrainer": TrainerSpec(plans_name_for("anatomix"), "anatomix", pretrained=True),
    "nnFMTrainer_scratch": TrainerSpec(plans_name_for("anatomix"), "anatomix"),
}


def trainer_spec(name: str) -> TrainerSpec:
    if name not in TRAINERS:
        raise ValueError(f"No benchmark entry for trainer {name!r}; known: {', '.join(TRAINERS)} "
                         "(add a row to nnfm/benchmark/trainer_table.py).")
    return TRAINERS[name]


def trainer_class_for(name: str, budget: Budget) -> str:
    """The class actually run: a trainer that ignores budget variables is swapped for its budget twin."""
    spec = trainer_spec(name)
    return spec.budget_class if budget.overrides and spec.budget_class else name
