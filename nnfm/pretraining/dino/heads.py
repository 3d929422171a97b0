"""DINO / iBOT projection head with DINOv3's layout (``mlp.0/2/4``, bias-free ``last_layer``)."""
import torch
from torch import nn
from torch.nn import functional as F


class DINOHead(nn.Module):
    """3-layer MLP -> L2-normalised bottleneck -> prototype scores (logits over prototypes)."""

    def __init__(self, in_dim: int, n_prototypes: int, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.Linear(bottleneck_dim, n_prototypes, bias=False)
        # DINOv3 draws every weight with std 0.02, which is 1/sqrt(2048), i.e. variance-preserving for its
        # 2048-wide MLP. std = 1/sqrt(fan_in) is the same at that width and keeps the signal alive in the
        # narrower heads used for small ViTs (with 0.02 there the MLP output shrinks to ~1e-2, Adam's bias
        # updates swamp it, every image gets the same bottleneck and Sinkhorn targets turn uniform).
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=layer.in_features ** -0.5)
                nn.init.zeros_(layer.bias)
        nn.init.trunc_normal_(self.last_layer.weight, std=0.02)   # logit scale as DINOv3, whatever the width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)
