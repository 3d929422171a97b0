"""nnFMViTTrainer: nnFMTrainer for ViT encoders (DINOv3 / MedDINOv3, 2D here; the 3D Primus path subclasses it).

What differs from nnFMTrainer (everything else, data, augmentation, loss, validation, checkpoints,
sliding-window prediction, provenance, budgets, is nnU-Net's / nnFMTrainer's own):

- network: ``DINOv3SegmentationNetwork`` (timm DINOv3 ViT + multi-scale tokens + Primus-style
  decoder), no deep supervision (MedDINOv3 trains without it);
- AdamW parameter groups (weight decay not on biases/norms/gammas/tokens), the encoder's lr by the loaded
  weights' family, optional layer-wise lr decay (``layer_decay``); the numbers (lr, betas, weight decay, warm-up,
  decay, gradient clipping) are the encoder's ``Recipe`` (its registry entry);
- stochastic depth (``drop_path_rate`` in the plans' arch_kwargs, 0.1-0.2 by preset);
- bfloat16 autocast on CUDA (no GradScaler needed), fused SDPA attention; fp32 on CPU.

Subclasses set ``encoder`` (a 2D ViT of nnfm/registry.py: preset, checkpoint families, default weights).
"""
from typing import Optional

import torch
from nnunetv2.utilities.helpers import dummy_context

from nnfm.errors import ConfigurationError
from nnfm.networks.from_plans import build_from_configuration, build_network, class_path, planned_for
from nnfm.training.cpu_threads import adapts_cpu_threads
from nnfm.training.schedule import FineTuneLRScheduler, FineTuneSchedule
from nnfm.training.vit_optimization import ADAMW_BETAS, build_adamw, vit_layer_id, vit_param_groups
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMViTTrainer(nnFMTrainer):
    encoder = "meddinov3_vitb16"
    layer_decay: Optional[float] = None      # e.g. 0.75 for layer-wise lr decay; None = off

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # one full-resolution output
        self.use_bf16 = self.device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if self.use_bf16:
            self.grad_scaler = None  # bf16 has fp32's range: no loss scaling

    # ---- network ----------------------------------------------------------------------------
    @classmethod
    def preset_arch_kwargs(cls) -> dict:
        return cls.encoder_entry().kwargs()

    @classmethod
    @adapts_cpu_threads
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = False):
        # plans made for this network carry its arch_kwargs; other plans (e.g. nnUNetPlans) get the preset.
        # Both go through nnU-Net's get_network_from_plans (build + the network's initialize hook)
        cls.check_planned_encoder(configuration_manager)
        planned_kwargs = configuration_manager.network_arch_init_kwargs or {}
        if planned_for(cls.network_class(), configuration_manager) and "vit" in planned_kwargs:
            return build_from_configuration(cls.network_class(), configuration_manager, num_input_channels,
                                            num_output_channels, False)
        return build_network(class_path(cls.network_class()), cls.preset_arch_kwargs(), [], num_input_channels,
                             num_output_channels, False)

    def _sync_scheduler_base_lrs(self) -> None:
        self.lr_scheduler.base_lrs_by_group = [g["initial_lr"] for g in self.optimizer.param_groups]

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        # the optimizer state carries each group's base lr (initial_lr) of the original run
        self._sync_scheduler_base_lrs()

    # ---- optimisation ---------------------------------------------------------------------------
    def fine_tune_schedule(self) -> FineTuneSchedule:
        # unlike nnFMTrainer's recipes, AdamW on a ViT warms up from random init too: only the frozen
        # head warm-up needs pretrained features to protect
        recipe = self.recipe()
        head = recipe.head_warmup_fraction if self.use_pretrained else 0.0
        return FineTuneSchedule.from_fractions(self.num_epochs, head, recipe.full_warmup_fraction, recipe.lr_decay)

    def build_optimizer(self):
        # the weights are loaded (nnFMTrainer.configure_optimizers): their family sets the encoder lr
        net = self._bare_network()
        depth = getattr(net, "num_layers", None) or len(getattr(net.encoder, "blocks", [])) or 1
        layer_id_fn = getattr(net, "encoder_layer_id", None) or (lambda name: vit_layer_id(name, depth))
        recipe = self.recipe()
        groups = vit_param_groups(net, net.encoder, self.encoder_lr(), self.initial_lr, self.weight_decay,
                                  self.layer_decay, depth, layer_id_fn)
        # Adam with weight decay 0 (anatomix's recipe) is AdamW with weight decay 0: one optimiser for both
        if recipe.optimizer == "SGD" or (recipe.optimizer == "Adam" and recipe.weight_decay):
            raise ConfigurationError(f"{type(self).__name__}: the ViT trainers run AdamW (or Adam without weight "
                                     f"decay); recipe {recipe.summary()} needs another trainer.")
        optimizer = build_adamw(groups, self.initial_lr, betas=recipe.betas or ADAMW_BETAS)
        precision = "bf16 autocast" if self.use_bf16 else ("fp16 autocast" if self.device.type == "cuda" else "fp32")
        self.print_to_log_file(f"nnFM ViT: {recipe.summary()}; this run: AdamW betas {optimizer.defaults['betas']}, "
                               f"decoder lr {self.initial_lr}, encoder lr {self.encoder_lr()} (weights family "
                               f"{self.loaded_family or 'none: random init'}), layer decay {self.layer_decay}, "
                               f"weight decay {self.weight_decay}, grad clip {self.grad_clip}, {precision}")
        return optimizer, FineTuneLRScheduler(optimizer, self.fine_tune_schedule())

    def _autocast(self):
        if self.device.type != "cuda":
            return dummy_context()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.use_bf16 else torch.float16)

    def validation_step(self, batch: dict) -> dict:
        # nnU-Net's autocast inside picks up the enclosing dtype (bf16 here)
        with self._autocast():
            return super().validation_step(batch)
