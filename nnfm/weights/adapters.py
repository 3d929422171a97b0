"""Per-family adaptation of mapped checkpoint tensors to the target network (after filtering).

An adapter changes tensors whose meaning survives a change of shape (a position embedding on a
new patch grid) and returns ``{key: how}`` for the load report's ``adapted``. It never drops keys.
"""
from typing import Callable, Dict

import torch

from nnfm.errors import CheckpointMismatchError
from nnfm.weights.pos_embed import cubic_grid, resize_pos_embed_3d

StateDict = Dict[str, torch.Tensor]
Adapter = Callable[[StateDict, torch.nn.Module, StateDict], Dict[str, str]]

POS_EMBED_KEY = "eva.pos_embed"


def _target_grid(module: torch.nn.Module, num_tokens: int) -> list:
    grid = getattr(module, "grid", None)  # PrimusEncoder knows its token grid
    return list(grid) if grid is not None else cubic_grid(num_tokens)


def adapt_nnssl_primus(mapped: StateDict, module: torch.nn.Module, target: StateDict) -> Dict[str, str]:
    """Resize ``eva.pos_embed`` from the pretraining grid (cubic, 20^3 for 160^3 patches) to the network's grid."""
    source, wanted = mapped.get(POS_EMBED_KEY), target.get(POS_EMBED_KEY)
    if source is None or wanted is None or source.shape == wanted.shape or source.shape[-1] != wanted.shape[-1]:
        return {}  # nothing to do, or a width mismatch the strict comparison reports
    try:
        old_grid = cubic_grid(source.shape[1])
        new_grid = _target_grid(module, wanted.shape[1])
    except ValueError:
        raise CheckpointMismatchError(
            f"CheckpointMismatchError: {POS_EMBED_KEY} has {source.shape[1]} tokens, which is not a cubic "
            f"pretraining grid, so it cannot be resized to the network's {wanted.shape[1]} tokens. Use a checkpoint "
            f"pretrained on cubic patches (nnssl Primus: 160^3 -> 20^3 tokens).") from None
    if int(torch.tensor(new_grid).prod()) != wanted.shape[1]:
        raise CheckpointMismatchError(f"CheckpointMismatchError: the network's grid {new_grid} does not hold its "
                                      f"{wanted.shape[1]} position-embedding tokens.")
    mapped[POS_EMBED_KEY] = resize_pos_embed_3d(source, old_grid, new_grid)
    return {POS_EMBED_KEY: f"token grid {'x'.join(map(str, old_grid))} -> {'x'.join(map(str, new_grid))} "
                           f"(trilinear, align_corners=False)"}


ADAPTERS: Dict[str, Adapter] = {"nnssl_primus": adapt_nnssl_primus}
