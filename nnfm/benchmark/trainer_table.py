"""Which plans each benchmarked trainer trains on, and who makes them.

Extend ``TRAINERS`` when nnFM gains encoders (a 2d or another 3d planner): one row per trainer.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

from nnfm_planners.plan_and_preprocess import plans_name_for

from nnfm.benchmark.profiles import Budget


@dataclass(frozen=True)
class TrainerSpec:
    plans: str
    encoder: Optional[str]               # nnFM planner encoder (nnFM_plan_and_preprocess -e); None: nnU-Net's planner
    budget_class: Optional[str] = None   # same trainer honouring nnFM budget variables, if the trainer itself does not
    pretrained: bool = False             # loads pretrained encoder weights (nnFM_WEIGHTS applies)
    configurations: Optional[Tuple[str, ...]] = None  # the nnU-Net configurations its plans hold; None: any

    def supports(self, configuration: str) -> bool:
        return self.configurations is None or configuration in self.configurations


def _nnfm(encoder: str, configuration: str, pretrained: bool) -> TrainerSpec:
    return TrainerSpec(plans_name_for(encoder), encoder, pretrained=pretrained, configurations=(configuration,))


TRAINERS = {
    "nnUNetTrainer": TrainerSpec("nnUNetPlans", None, budget_class="nnUNetTrainer_nnFMBudget"),
    "nnFMTrainer": _nnfm("anatomix", "3d_fullres", pretrained=True),
    "nnFMTrainer_scratch": _nnfm("anatomix", "3d_fullres", pretrained=False),
    "nnFMTrainer_noWarmup": _nnfm("anatomix", "3d_fullres", pretrained=True),
    "nnFMTrainer_SGD": _nnfm("anatomix", "3d_fullres", pretrained=True),
    "nnFMTrainer_Adam": _nnfm("anatomix", "3d_fullres", pretrained=True),
    "nnFMTrainer_nnssl": _nnfm("anatomix", "3d_fullres", pretrained=True),
    "nnFMTrainer_headWarmup": _nnfm("anatomix", "3d_fullres", pretrained=True),
    "nnFMTrainer_MedDINOv3": _nnfm("meddinov3_vitb16", "2d", pretrained=True),
    "nnFMTrainer_MedDINOv3_scratch": _nnfm("meddinov3_vitb16", "2d", pretrained=False),
    "nnFMTrainer_DINOv3_B": _nnfm("dinov3_vitb16", "2d", pretrained=True),
    "nnFMTrainer_DINOv3_B_scratch": _nnfm("dinov3_vitb16", "2d", pretrained=False),
    "nnFMTrainer_DINOv3_S": _nnfm("dinov3_vits16", "2d", pretrained=True),
    "nnFMTrainer_DINOv3_S_scratch": _nnfm("dinov3_vits16", "2d", pretrained=False),
    "nnFMTrainer_Primus": _nnfm("primus_m", "3d_fullres", pretrained=True),
    "nnFMTrainer_Primus_scratch": _nnfm("primus_m", "3d_fullres", pretrained=False),
    "nnFMTrainer_PrimusTiny_scratch": _nnfm("primus_tiny", "3d_fullres", pretrained=False),
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
