"""Training-memory estimate for ViTs: the meta-device count plus an explicit model of attention.

On the meta device ``F.scaled_dot_product_attention`` runs PyTorch's math reference, which saves
two (batch*heads, N, N) tensors per block (scores after softmax, and the same viewed 4D) for
backward; tests/test_primus3d.py checks that coefficient against the meta count. The kernels that
train on a GPU (flash / memory-efficient attention, and the CPU flash kernel) keep only q, k, v,
the output and a per-row logsumexp, all O(N), already counted. So the N^2 term is subtracted
for ``attention_backend="fused"`` and kept for ``"math"``.
"""
from typing import Callable, Sequence

from torch import nn

from nnfm.planning.memory import MemoryEstimate, count_activation_elements

ATTENTION_BACKENDS = ("fused", "math")
SAVED_NXN_PER_BLOCK = 2  # tensors of heads x N x N that math SDPA saves per block


class AdamWMemoryEstimate(MemoryEstimate):
    """ViTs train with AdamW: fp32 weights, gradients and two moments per parameter."""

    @property
    def parameter_bytes(self) -> int:
        return 4 * 4 * self.parameter_elements


def attention_matrix_elements(num_tokens: int, num_heads: int, depth: int) -> int:
    """Per-sample elements of the N x N attention tensors the math backend keeps for backward."""
    return SAVED_NXN_PER_BLOCK * depth * num_heads * num_tokens ** 2


def _attention_shape(network: nn.Module):
    eva = network.encoder.eva
    return len(eva.blocks), eva.blocks[0].attn.num_heads


def estimate_vit_training_memory(network_factory: Callable[[], nn.Module], in_channels: int,
                                 patch_size: Sequence[int], attention_backend: str = "fused",
                                 bytes_per_activation: int = 2) -> MemoryEstimate:
    """``network_factory()`` returns a fresh Primus-style network (``encoder.eva`` holds the blocks)."""
    if attention_backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {attention_backend!r}")
    network = network_factory()
    parameters = sum(p.numel() for p in network.parameters())
    depth, heads = _attention_shape(network)
    tokens = network.num_tokens
    elements = count_activation_elements(network, (1, in_channels, *patch_size))
    if attention_backend == "fused":
        elements -= attention_matrix_elements(tokens, heads, depth)
    return AdamWMemoryEstimate(elements, parameters, bytes_per_activation)
