"""Trainer variants, each overriding one thing (nnU-Net's naming: _scratch, _Nepochs)."""
import torch

from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMTrainer_scratch(nnFMTrainer):
    """Same network, random initialisation (and so no warm-up: there are no pretrained features to protect)."""
    use_pretrained = False


class nnFMTrainer_noWarmup(nnFMTrainer):
    """Pretrained, but without the frozen-encoder and warm-up epochs: nnU-Net's plain poly schedule from epoch 0.

    Its schedule equals nnFMTrainer_scratch's, so the two differ only in the initial weights.
    """
    head_warmup_fraction = 0.0
    full_warmup_fraction = 0.0


def _with_epochs(base: type, epochs: int) -> type:
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        self._apply_budget_from_environment()  # an explicit env budget still wins
    return type(f"{base.__name__}_{epochs}epoch{'s' if epochs > 1 else ''}", (base,),
                {"__init__": __init__, "__module__": __name__})


# short budgets for CPU and quick checks; nnU-Net's own default is 1000 epochs
for _base in (nnFMTrainer, nnFMTrainer_scratch):
    for _epochs in (1, 5, 10, 20, 50, 100, 250):
        _cls = _with_epochs(_base, _epochs)
        globals()[_cls.__name__] = _cls
del _base, _epochs, _cls
