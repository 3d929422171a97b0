"""Student / EMA teacher / Gram teacher and the combined DINO + iBOT + KoLeo (+ Gram) loss."""
import copy
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from nnfm.pretraining.dino.backbone import MaskableDinoViT
from nnfm.pretraining.dino.heads import DINOHead
from nnfm.pretraining.dino.losses import dino_loss, gram_loss, ibot_loss, koleo_loss, sinkhorn_knopp


@dataclass(frozen=True)
class LossSettings:
    student_temp: float = 0.1
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    gram_weight: float = 0.0
    sinkhorn_iterations: int = 3


class SSLBranch(nn.Module):
    """Backbone + DINO head (CLS) + iBOT head (patches). One forward gives every student output (one DDP call)."""

    def __init__(self, backbone: MaskableDinoViT, n_prototypes: int, hidden_dim: int, bottleneck_dim: int):
        super().__init__()
        self.backbone = backbone
        self.dino_head = DINOHead(backbone.embed_dim, n_prototypes, hidden_dim, bottleneck_dim)
        self.ibot_head = DINOHead(backbone.embed_dim, n_prototypes, hidden_dim, bottleneck_dim)

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor,
                masks: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """global_crops [G*B, 1, S, S] (view-major), local_crops [L*B, 1, s, s] or empty, masks [G*B, h, w]."""
        out = self.backbone(global_crops, masks)
        cls_logits = [self.dino_head(out["cls"])]
        if local_crops.shape[0]:
            cls_logits.append(self.dino_head(self.backbone(local_crops)["cls"]))
        result = {"cls": out["cls"], "patches": out["patches"], "cls_logits": torch.cat(cls_logits)}
        if masks is not None:
            result["masked_logits"] = self.ibot_head(out["patches"][masks.flatten(1)])
        return result


class DinoSSL(nn.Module):
    """Holds the student, its EMA teacher (no gradients) and, in stages 2-3, a frozen Gram teacher."""

    def __init__(self, student: SSLBranch, losses: LossSettings, gram_teacher: Optional[MaskableDinoViT] = None):
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)
        self.gram_teacher = gram_teacher
        if gram_teacher is not None:
            gram_teacher.requires_grad_(False)
        self.losses = losses
        if losses.gram_weight > 0 and gram_teacher is None:
            raise ValueError("Gram anchoring (gram_weight > 0) needs a Gram teacher (an earlier teacher checkpoint)")

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

    @torch.no_grad()
    def teacher_targets(self, global_crops: torch.Tensor, masks: torch.Tensor, teacher_temp: float) -> Dict:
        self.teacher.eval()
        out = self.teacher.backbone(global_crops)
        iterations = self.losses.sinkhorn_iterations
        targets = {"cls": sinkhorn_knopp(self.teacher.dino_head(out["cls"]), teacher_temp, iterations),
                   "masked": sinkhorn_knopp(self.teacher.ibot_head(out["patches"][masks.flatten(1)]),
                                            teacher_temp, iterations)}
        if self.gram_teacher is not None and self.losses.gram_weight > 0:
            self.gram_teacher.eval()
            targets["gram_patches"] = self.gram_teacher(global_crops)["patches"]
        return targets

    def loss(self, student_out: Dict, targets: Dict, masks: torch.Tensor, n_global: int) -> Dict[str, torch.Tensor]:
        settings = self.losses
        parts = {"dino": dino_loss(student_out["cls_logits"], targets["cls"], n_global, settings.student_temp)}
        image_of_token = torch.arange(masks.shape[0], device=masks.device).repeat_interleave(masks.flatten(1).sum(1))
        parts["ibot"] = ibot_loss(student_out["masked_logits"], targets["masked"], image_of_token, masks.shape[0],
                                  settings.student_temp)
        total = settings.dino_weight * parts["dino"] + settings.ibot_weight * parts["ibot"]
        if settings.koleo_weight > 0:
            parts["koleo"] = sum(koleo_loss(chunk) for chunk in student_out["cls"].chunk(n_global))
            total = total + settings.koleo_weight * parts["koleo"]
        if "gram_patches" in targets:
            parts["gram"] = gram_loss(student_out["patches"], targets["gram_patches"])
            total = total + settings.gram_weight * parts["gram"]
        parts["total"] = total
        return parts
