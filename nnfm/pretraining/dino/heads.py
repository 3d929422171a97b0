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
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)
