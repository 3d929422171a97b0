"""Supervised contrastive loss over voxels (Khosla et al. 2020), as used by anatomix.

Anchors are voxels of both views; positives are all other voxels with the same label, within
and across views; everything else in the same sample is a negative. Label ids are only
meaningful inside one sample (they are random per ensemble), so samples never contrast with
each other.
"""
from typing import Optional

import torch
import torch.nn.functional as F


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.33) -> torch.Tensor:
    """features: (B, N, D) (normalised inside), labels: (B, N). Mean over anchors that have a positive."""
    if features.dim() == 2:
        features, labels = features[None], labels[None]
    features = F.normalize(features.float(), dim=-1)
    logits = features @ features.transpose(1, 2) / temperature            # (B, N, N)
    n = logits.shape[-1]
    self_mask = torch.eye(n, dtype=torch.bool, device=logits.device)[None]
    logits = logits.masked_fill(self_mask, float("-inf"))                  # an anchor is not its own candidate
    log_prob = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    positives = (labels[:, :, None] == labels[:, None, :]) & ~self_mask
    num_positives = positives.sum(-1)
    mean_log_prob_pos = log_prob.masked_fill(~positives, 0.0).sum(-1) / num_positives.clamp(min=1)
    valid = num_positives > 0
    if not valid.any():
        return features.sum() * 0.0   # keeps the graph (DDP needs every rank to backward)
    return -mean_log_prob_pos[valid].mean()


def sample_uniform_indices(batch: int, size: int, count: int,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B, min(count, size)) flat voxel indices, drawn uniformly *without* replacement per sample.

    anatomix's sampling (neel-dey/anatomix, ``pretraining/models/pretraining_networks.py``,
    ``PatchSampleF.forward``): ``torch.randperm`` of all positions, the first ``num_patches`` kept;
    a level with fewer positions than ``count`` contributes all of them. Labels play no part.
    """
    count = min(count, size)
    return torch.stack([torch.randperm(size, generator=generator)[:count] for _ in range(batch)])


def sample_voxel_indices(labels: torch.Tensor, count: int, generator: Optional[torch.Generator] = None,
                         balanced: bool = True, candidates_per_voxel: int = 64) -> torch.Tensor:
    """(B, count) flat voxel indices per sample of ``labels`` (B, ...), with replacement (``--sampling balanced``).

    ``balanced``: each voxel is drawn with probability proportional to 1 / (size of its label),
    i.e. every label present is about equally likely, so small structures are not drowned out by
    background and large tissues. Large volumes are first subsampled to
    ``candidates_per_voxel * count`` uniform candidates (exact below that size): weighting all
    884k voxels of a 96^3 volume costs ~20 ms per sample, which would stall a GPU step; labels
    smaller than ~1/(64 * count) of the volume can then be missed in some steps.
    """
    flat = labels.reshape(labels.shape[0], -1)
    size = flat.shape[1]
    if not balanced:
        return torch.randint(size, (flat.shape[0], count), generator=generator, device=flat.device)
    rows = []
    for row in flat:
        pool = None
        if size > candidates_per_voxel * count:
            pool = torch.randint(size, (candidates_per_voxel * count,), generator=generator, device=row.device)
            row = row[pool]
        counts = torch.bincount(row)
        weights = 1.0 / counts[row].double()
        picked = torch.multinomial(weights, count, replacement=True, generator=generator)
        rows.append(picked if pool is None else pool[picked])
    return torch.stack(rows)


def gather_voxels(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """features (B, C, ...) and flat indices (B, N) -> (B, N, C)."""
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    return flat.gather(2, indices[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)
