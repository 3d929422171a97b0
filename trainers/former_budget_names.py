"""Former trainer names ``<trainer>_<N>epoch(s)``: result folders trained under them still predict and resume.

Up to issue 14, nnFM generated 84 short-budget classes (12 trainers x 1, 5, 10, 20, 50, 100, 250 epochs).
The budget is now ``nnFM_EPOCHS=N`` with any trainer (plus the written-out ``nnFMTrainer_1epoch`` and
``nnFMTrainer_5epochs``). A trained model, however, keeps its trainer's name: nnUNetv2_predict reads
``trainer_name`` from the checkpoint and looks the class up by that name (nnunetv2 2.8.1,
inference/predict_from_raw_data.py ``initialize_from_trained_model_folder`` ->
utilities/find_objects.py ``recursive_find_trainer_class_by_name``, which asks every module of the
nnUNet_extTrainer folders ``hasattr(module, name)``); nnUNetv2_train --c and -val do the same with -tr.
This module answers those names (82: the two written out above are classes of their own) on first use (a module
``__getattr__``, PEP 562) with the class they always were: the trainer with ``num_epochs = N``, an explicit
nnFM_EPOCHS still winning.
"""
import importlib

import torch

EPOCHS = (1, 5, 10, 20, 50, 100, 250)
# the trainers that had short-budget names, and the module defining each
BASES = {
    "nnFMTrainer": "nnfm_trainers.nnfm_trainer",
    "nnFMTrainer_scratch": "nnfm_trainers.nnfm_trainer_variants",
    **{name: "nnfm_trainers.nnfm_vit_trainer_variants" for name in (
        "nnFMTrainer_MedDINOv3", "nnFMTrainer_MedDINOv3_scratch", "nnFMTrainer_DINOv3_B",
        "nnFMTrainer_DINOv3_B_scratch", "nnFMTrainer_DINOv3_S", "nnFMTrainer_DINOv3_S_scratch")},
    **{name: "nnfm_trainers.nnfm_primus_trainer" for name in (
        "nnFMTrainer_Primus", "nnFMTrainer_Primus_scratch", "nnFMTrainer_PrimusTiny",
        "nnFMTrainer_PrimusTiny_scratch")},
}
KEPT = ("nnFMTrainer_1epoch", "nnFMTrainer_5epochs")  # written out in nnfm_trainer_variants.py
FORMER = {f"{base}_{n}epoch{'s' if n > 1 else ''}": (base, n) for base in BASES for n in EPOCHS}
FORMER = {name: spec for name, spec in FORMER.items() if name not in KEPT}


def _budget_class(name: str, base: type, epochs: int) -> type:
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        self._apply_budget_from_environment()  # an explicit nnFM_EPOCHS still wins

    return type(name, (base,), {"__init__": __init__, "__module__": __name__,
                                "__doc__": f"Former name: {base.__name__} with num_epochs = {epochs}."})


def __getattr__(name: str) -> type:
    if name not in FORMER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    base_name, epochs = FORMER[name]
    base = getattr(importlib.import_module(BASES[base_name]), base_name)
    cls = globals()[name] = _budget_class(name, base, epochs)  # one class per name, as before
    return cls
