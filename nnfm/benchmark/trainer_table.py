"""Which plans each benchmarked trainer trains on, derived from the trainers and the encoder registry.

Every nnFM trainer class names its ``encoder`` (nnfm/registry.py); the registry entry gives the plans
(``nnFMPlans_<encoder>``), the planner's ``-e`` and the configuration. A trainer of nnU-Net's own network
(``encoder = None``) trains on nnU-Net's plans. A new encoder or recipe variant needs no edit here.
"""
import functools
import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from nnfm.benchmark.profiles import Budget
from nnfm.registry import get_encoder


@dataclass(frozen=True)
class TrainerSpec:
    plans: str
    encoder: Optional[str]               # nnFM planner encoder (nnFM_plan_and_preprocess -e); None: nnU-Net's planner
    budget_class: Optional[str] = None   # same trainer honouring nnFM budget variables, if the trainer itself does not
    pretrained: bool = False             # loads pretrained encoder weights (nnFM_WEIGHTS applies)
    configurations: Optional[Tuple[str, ...]] = None  # the nnU-Net configurations its plans hold; None: any

    def supports(self, configuration: str) -> bool:
        return self.configurations is None or configuration in self.configurations


@functools.lru_cache(maxsize=1)
def trainer_table() -> Dict[str, TrainerSpec]:
    """nnU-Net's baseline plus every nnFM trainer class found in the installed ``nnfm_trainers`` package."""
    import nnfm_trainers
    from nnfm_trainers.nnfm_trainer import nnFMTrainer

    table = {"nnUNetTrainer": TrainerSpec("nnUNetPlans", None, budget_class="nnUNetTrainer_nnFMBudget")}
    for info in sorted(pkgutil.iter_modules(nnfm_trainers.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"nnfm_trainers.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, nnFMTrainer) and name == cls.__name__ and name not in table:
                if cls.encoder is None:  # nnU-Net's own network from nnU-Net's plans (nnFMTrainer_nnUNetPlans)
                    table[name] = TrainerSpec("nnUNetPlans", None, pretrained=bool(cls.use_pretrained))
                    continue
                entry = get_encoder(cls.encoder)
                table[name] = TrainerSpec(entry.plans_name, entry.name, pretrained=bool(cls.use_pretrained),
                                          configurations=(entry.configuration,))
    return table


def trainer_spec(name: str) -> TrainerSpec:
    table = trainer_table()
    if name not in table:
        raise ValueError(f"No benchmark entry for trainer {name!r}; known: {', '.join(sorted(table))} "
                         "(nnFM trainers are found in the nnfm_trainers package; nnU-Net's own: nnUNetTrainer).")
    return table[name]


def trainer_class_for(name: str, budget: Budget) -> str:
    """The class actually run: a trainer that ignores budget variables is swapped for its budget twin."""
    spec = trainer_spec(name)
    return spec.budget_class if budget.overrides and spec.budget_class else name
