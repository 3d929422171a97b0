"""Training-memory estimate for a network at a patch and batch size, without running it.

The forward pass runs on PyTorch's meta device (shapes only, no compute, no memory) and every
tensor autograd keeps for the backward pass is counted, each storage once: parameters and views
of them (a Linear layer saves its transposed weight) are no activations, and a view of an
activation (reshapes, slices) is counted through its base tensor. Parameters cost weights +
gradients + the optimiser's states. Not counted: transient gradient buffers during backward and
allocator/library workspaces; benchmarks/memory_estimate_check.py reports the measured ratio.
ViTs add an attention model on top of this count (``nnfm.planning.vit_memory``).
"""
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ContextManager, Optional, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class MemoryEstimate:
    activation_elements_per_sample: int
    parameter_elements: int
    bytes_per_activation: int
    optimizer_states: int = 1            # SGD momentum (nnU-Net's optimiser); AdamW keeps 2

    def activation_bytes(self, batch_size: int) -> int:
        return batch_size * self.activation_elements_per_sample * self.bytes_per_activation

    @property
    def parameter_bytes(self) -> int:
        # fp32 weights, gradients and optimiser states; AMP keeps master weights in fp32
        return (2 + self.optimizer_states) * 4 * self.parameter_elements

    def total_bytes(self, batch_size: int) -> int:
        return self.activation_bytes(batch_size) + self.parameter_bytes

    def max_batch_size(self, budget_bytes: float) -> int:
        per_sample = self.activation_elements_per_sample * self.bytes_per_activation
        return int((budget_bytes - self.parameter_bytes) // per_sample)


def count_activation_elements(network: nn.Module, input_shape: Sequence[int],
                              during: Optional[ContextManager] = None) -> int:
    """Elements autograd saves for backward in one forward pass of ``input_shape`` (incl. batch).

    Counted through autograd's saved-tensor hooks, so padded copies (reflect padding), concatenated
    skips and normalisation inputs are all included. ``during`` is entered around the forward pass
    (the ViT estimate swaps the attention kernel there).
    """
    saved = {}

    def pack(tensor):
        base = tensor._base if tensor._base is not None else tensor
        if not isinstance(base, nn.Parameter):
            saved[id(base)] = base  # keep a reference so ids stay unique
        return tensor

    meta_net = network.to("meta").train()
    with during or nullcontext(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        meta_net(torch.empty(*input_shape, device="meta"))
    return sum(t.numel() for t in saved.values())


def estimate_training_memory(network_factory, in_channels: int, patch_size: Sequence[int],
                             bytes_per_activation: int = 2) -> MemoryEstimate:
    """``network_factory()`` must return a fresh network (it is moved to the meta device).

    bytes_per_activation: 2 for mixed precision on GPU (nnU-Net's default there), 4 for fp32 (CPU).
    """
    network = network_factory()
    parameters = sum(p.numel() for p in network.parameters())
    elements = count_activation_elements(network, (1, in_channels, *patch_size))
    return MemoryEstimate(elements, parameters, bytes_per_activation)
