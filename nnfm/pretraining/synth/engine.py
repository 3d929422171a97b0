"""Synthetic view pairs: one label ensemble, one shared spatial warp, two independent appearances.

Every sample is a pure function of ``(seed, index)``, so a stream can be reproduced, split over
DataLoader workers and DDP ranks without overlap, and resumed at any step.
"""
from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from nnfm.pretraining.synth.appearance import AppearanceConfig, render_view
from nnfm.pretraining.synth.label_files import LabelMapLibrary
from nnfm.pretraining.synth.labels import LabelConfig, random_label_ensemble
from nnfm.pretraining.synth.spatial import SpatialConfig, random_flips, random_sampling_grid, warp_labels


@dataclass
class SynthConfig:
    size: Tuple[int, int, int] = (96, 96, 96)
    labels: LabelConfig = field(default_factory=LabelConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    labels_dir: Optional[str] = None      # folder of label maps mixed in with the procedural ones
    real_label_prob: float = 0.5          # share of samples drawn from labels_dir (when given)


def _as_size(size: Union[int, Sequence[int]]) -> Tuple[int, int, int]:
    return (int(size),) * 3 if np.isscalar(size) else tuple(int(s) for s in size)


class SyntheticPairGenerator:
    """``generator.sample(index)`` -> {"view1": 1xDxHxW, "view2": 1xDxHxW (float32, [0, 1]), "labels": DxHxW int64}."""

    def __init__(self, config: SynthConfig = None, seed: int = 0, size=None, labels_dir: Optional[str] = None):
        self.config = config or SynthConfig()
        if size is not None:
            self.config.size = _as_size(size)
        if labels_dir is not None:
            self.config.labels_dir = labels_dir
        self.config.size = _as_size(self.config.size)
        self.seed = int(seed)
        self._library = None   # opened lazily: each DataLoader worker gets its own cache

    @property
    def library(self) -> Optional[LabelMapLibrary]:
        if self._library is None and self.config.labels_dir:
            self._library = LabelMapLibrary(self.config.labels_dir)
        return self._library

    def label_map(self, rng: np.random.Generator) -> np.ndarray:
        config = self.config
        if self.library is not None and rng.random() < config.real_label_prob:
            return self.library.random_label_map(rng, config.size, config.labels.max_labels)
        return random_label_ensemble(rng, config.size, config.labels)

    def sample(self, index: int) -> Dict[str, torch.Tensor]:
        # independent streams per stage: changing one stage's draws does not reshuffle the others
        label_rng, spatial_rng, rng1, rng2 = (
            np.random.default_rng(s) for s in np.random.SeedSequence([self.seed, int(index)]).spawn(4))
        labels = self.label_map(label_rng)
        labels = random_flips(spatial_rng, labels, self.config.spatial)
        labels = warp_labels(labels, random_sampling_grid(spatial_rng, labels.shape, self.config.spatial))
        num_ids = self.config.labels.max_labels + 1
        view1 = render_view(rng1, labels, self.config.appearance, num_ids)
        view2 = render_view(rng2, labels, self.config.appearance, num_ids)
        return {"view1": torch.from_numpy(view1)[None], "view2": torch.from_numpy(view2)[None],
                "labels": torch.from_numpy(labels.astype(np.int64))}

    __call__ = sample


class SyntheticPairDataset(IterableDataset):
    """Endless (or ``num_batches`` long) stream of samples, laid out so that batches come out in order.

    Batch ``j`` of this rank holds the samples with global indices
    ``((first_batch + j) * world_size + rank) * batch_size + b``. DataLoader worker ``w`` yields
    whole batches ``j = w, w + num_workers, ...``; the DataLoader collects batches from its workers
    round robin, so the batch sequence (and each batch's contents) does not depend on the number
    of workers, and ``first_batch`` resumes a stream at any step.
    """

    def __init__(self, generator: SyntheticPairGenerator, batch_size: int, first_batch: int = 0,
                 num_batches: Optional[int] = None, rank: int = 0, world_size: int = 1):
        self.generator, self.batch_size = generator, int(batch_size)
        self.first_batch, self.num_batches = int(first_batch), num_batches
        self.rank, self.world_size = int(rank), int(world_size)

    def sample_index(self, batch: int, item: int) -> int:
        return ((self.first_batch + batch) * self.world_size + self.rank) * self.batch_size + item

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batch = worker
        while self.num_batches is None or batch < self.num_batches:
            for item in range(self.batch_size):
                yield self.generator.sample(self.sample_index(batch, item))
            batch += workers


def worker_init(_worker_id: int) -> None:
    """DataLoader workers: one thread each, so W workers use W cores instead of oversubscribing."""
    torch.set_num_threads(1)
