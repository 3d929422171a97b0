"""Training-memory estimate for ViT networks: ``nnfm.planning.memory``'s count plus attention's cost.

What differs from the generic estimate is the attention kernel (checked in tests/test_vit2d.py and
tests/test_primus3d.py): on the meta device (as on CPU) ``scaled_dot_product_attention`` runs
PyTorch's math path, which saves the (B, heads, N, N) attention probabilities of every block: the
estimate then grows with N^2, which is right for CPU training and for GPUs without a fused kernel.
On a GPU the fused flash / memory-efficient kernels save only q, k, v, the output and a
(B, heads, N) log-sum-exp, so ``attention="fused"`` replaces SDPA during the count by a function
that saves exactly those. ``attention="math"`` keeps the N^2 term (explicitly:
``attention_matrix_elements``). Parameters cost weights + gradients + AdamW's two moments (16 bytes each).
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnfm.planning.memory import MemoryEstimate, count_activation_elements


@dataclass(frozen=True)
class ViTMemoryEstimate(MemoryEstimate):
    optimizer_states: int = 2            # AdamW: exp_avg and exp_avg_sq
    attention: str = "fused"
    tokens: int = 0
    attention_matrix_elements: int = 0   # per sample, math path only (0 when fused)


class _FusedAttentionSaves(torch.autograd.Function):
    """What flash / memory-efficient SDPA keeps for backward: q, k, v, out, logsumexp (B, H, N)."""

    @staticmethod
    def forward(ctx, q, k, v):
        with torch.no_grad():
            out = _ORIGINAL_SDPA(q, k, v)
        lse = q.new_empty(q.shape[:-1])
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never called: the count only runs forward
        raise NotImplementedError


_ORIGINAL_SDPA = F.scaled_dot_product_attention


def _fused_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    return _FusedAttentionSaves.apply(q, k, v)


@contextmanager
def _fused_attention():
    F.scaled_dot_product_attention = _fused_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = _ORIGINAL_SDPA


def count_vit_activation_elements(network: nn.Module, input_shape: Sequence[int], attention: str = "fused") -> int:
    return count_activation_elements(network, input_shape, _fused_attention() if attention == "fused" else None)


def estimate_vit_training_memory(network_factory, in_channels: int, patch_size: Sequence[int],
                                 bytes_per_activation: int = 2, attention: str = "fused",
                                 patch: int = 16) -> ViTMemoryEstimate:
    """``network_factory()`` returns a fresh network with ``.encoder`` (timm ViT); it is moved to meta.

    attention: "fused" (GPU flash / memory-efficient kernels, O(N) memory) or "math" (CPU, O(N^2)).
    """
    if attention not in ("fused", "math"):
        raise ValueError(f"attention must be 'fused' or 'math', got {attention!r}")
    network = network_factory()
    parameters = sum(p.numel() for p in network.parameters())
    encoder = getattr(network, "encoder", network)
    heads = encoder.blocks[0].attn.num_heads if hasattr(encoder, "blocks") else 1
    depth = len(getattr(encoder, "blocks", []))
    tokens = int(torch.tensor([s // patch for s in patch_size]).prod()) + getattr(encoder, "num_prefix_tokens", 0)
    elements = count_vit_activation_elements(network, (1, in_channels, *patch_size), attention)
    matrix = depth * heads * tokens * tokens if attention == "math" else 0
    return ViTMemoryEstimate(elements, parameters, bytes_per_activation, attention=attention, tokens=tokens,
                             attention_matrix_elements=matrix)
