"""LVM-Med ResNet-50 U-Net trainers (nnU-Net's ``2d`` configuration).

- ``nnFMTrainer_LVMMed``: the published LVM-Med ResNet-50 weights (``lvmmed_resnet50``) by default. The weights
  are licensed CC BY-NC-ND 2.0 (academic research only); the licence is printed into the training log
  whenever they are loaded.
- ``nnFMTrainer_LVMMed_scratch``: same network and recipe, random initialisation.
- ``..._{1,5,10,20,50,100,250}epoch(s)``: short budgets.

Recipe: LVM-Med's own segmentation fine-tuning (duyhominhnguyen/LVM-Med
segmentation_2d/train_R50_seg_adam_optimizer_2d.py with dataloader/yaml_data/*_endtoend_R50.yml): Adam
lr 1e-4, betas (0.9, 0.999), weight decay 0, no scheduler (``scheduler: 0``), gradient norm clipped at 1 (their
README recommends it for ResNet-50), CE + Dice on one full-resolution output, nothing frozen. nnU-Net's loss
is also CE + Dice; deep supervision is off, as in their single-output training. Epochs, batch size, patch
and augmentation are nnU-Net's.
"""
import torch
from nnunetv2.utilities.helpers import dummy_context

from nnfm.networks.lvmmed_segmentation import LVMMedSegmentationNetwork
from nnfm_trainers.nnfm_trainer import nnFMTrainer


class nnFMTrainer_LVMMed(nnFMTrainer):
    encoder = "lvmmed_resnet50"
    network_class = LVMMedSegmentationNetwork
    optimizer_name = "Adam"
    recipe_lr = 1e-4
    recipe_weight_decay = 0.0
    head_warmup_fraction = 0.0
    full_warmup_fraction = 0.0
    lr_decay = "constant"
    grad_clip = 1.0  # nnU-Net's train_step clips at 12

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # LVM-Med trains one full-resolution output

    def _load_pretrained_encoder(self, net) -> None:
        super()._load_pretrained_encoder(net)
        if self.pretrained_report is not None and self.pretrained_report.family == "lvmmed_resnet50":
            from nnfm.weights.registry import LVMMED_LICENSE
            self.print_to_log_file(f"nnFM: the LVM-Med ResNet-50 weights are licensed {LVMMED_LICENSE}.")

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's train_step (nnunetv2 2.8.1 nnUNetTrainer.train_step) with LVM-Med's clip value."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = self.loss(self.network(data), target)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}


class nnFMTrainer_LVMMed_scratch(nnFMTrainer_LVMMed):
    use_pretrained = False
