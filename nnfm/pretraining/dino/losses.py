"""Losses of DINOv2/v3 SSL: Sinkhorn-Knopp centring, DINO and iBOT cross-entropies, KoLeo, Gram anchoring.

All work on float32 and are correct under DDP: Sinkhorn-Knopp normalises over the global batch.
"""
import torch
import torch.distributed as dist
from torch.nn import functional as F


def _all_reduce(tensor: torch.Tensor, op=None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets [N, K] whose prototype marginals are uniform over the (global) batch.

    This is DINOv2/v3's centring (instead of DINO's running-mean softmax centre): it prevents
    collapse onto a few prototypes without a momentum centre.
    """
    logits = teacher_logits.float() / temperature
    peak = _all_reduce(logits.max().reshape(1), dist.ReduceOp.MAX if dist.is_initialized() else None)
    q = torch.exp(logits - peak).t()                                 # [K, N]
    n_samples = _all_reduce(torch.tensor([q.shape[1]], dtype=torch.float32, device=q.device))
    n_prototypes = q.shape[0]
    q /= _all_reduce(q.sum().reshape(1))
    for _ in range(iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))                 # equal mass per prototype
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)                              # each sample a distribution
        q /= n_samples
    return (q * n_samples).t()


def cross_entropy(teacher_probs: torch.Tensor, student_logits: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Per-row -sum(p_teacher * log softmax(student / T))."""
    return -(teacher_probs * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(dim=-1)


def dino_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, n_global: int, student_temp: float) -> torch.Tensor:
    """student_logits [V*B, K] (global views first, then local), teacher_probs [G*B, K] (global views).

    Every student view is matched with every teacher global view except itself (DINO's pairs).
    """
    batch = teacher_probs.shape[0] // n_global
    student = student_logits.reshape(-1, batch, student_logits.shape[-1])
    teacher = teacher_probs.reshape(n_global, batch, -1)
    total, pairs = student_logits.new_zeros(()), 0
    for s in range(student.shape[0]):
        for t in range(n_global):
            if s == t:
                continue
            total = total + cross_entropy(teacher[t], student[s], student_temp).mean()
            pairs += 1
    return total / max(pairs, 1)


def ibot_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, image_of_token: torch.Tensor,
              n_images: int, student_temp: float) -> torch.Tensor:
    """Masked-patch cross-entropy, normalised as DINOv3's ``iBOTPatchLoss.forward_masked``.

    student_logits / teacher_probs: [M, K] for the M masked tokens of all images; image_of_token: [M], the
    global-crop image each masked token belongs to; n_images: the number of global-crop images B (masked or
    not). Each masked token weighs 1 / (masked tokens of its image) and the sum is divided by **all** B images
    (facebookresearch/dinov3, dinov3/loss/ibot_patch_loss.py: ``-loss.sum() / student_masks_flat.shape[0]``),
    so an image without masked tokens lowers the mean instead of being left out. Returns a scalar.
    """
    per_token = cross_entropy(teacher_probs, student_logits, student_temp)
    counts = torch.bincount(image_of_token, minlength=n_images).clamp(min=1).to(per_token.dtype)
    weights = 1.0 / counts[image_of_token]
    return (per_token * weights).sum() / max(n_images, 1)


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate: -mean log(distance to the nearest neighbour) of L2-normalised rows.

    Low for features spread over the sphere, high for collapsed ones; needs at least 2 rows.
    """
    if features.shape[0] < 2:
        raise ValueError("KoLeo needs at least 2 features per group (batch size >= 2)")
    x = F.normalize(features.float(), dim=-1, eps=eps)
    with torch.no_grad():
        similarity = x @ x.t()
        similarity.fill_diagonal_(-2.0)                              # never pick oneself
        nearest = similarity.argmax(dim=1)
    distances = (x - x[nearest]).norm(dim=-1)
    return -torch.log(distances + eps).mean()


def gram_loss(student_patches: torch.Tensor, teacher_patches: torch.Tensor) -> torch.Tensor:
    """MSE between per-image Gram matrices of L2-normalised patch features ([B, N, D] each), as DINOv3."""
    s = F.normalize(student_patches.float(), dim=-1)
    t = F.normalize(teacher_patches.float(), dim=-1)
    return F.mse_loss(s @ s.transpose(1, 2), t @ t.transpose(1, 2))
