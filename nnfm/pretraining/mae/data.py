"""Random image patches of an nnU-Net preprocessed dataset, as a deterministic stream.

Item ``k`` of the stream on rank ``r`` is global sample ``(first_step + k // B) * world * B + r * B + k % B``,
and sample ``i`` is a pure function of (seed, i): a resumed run and each DDP rank draw exactly what an
uninterrupted run would. A sample: a random case (uniform), a random channel, a random patch position
(patches larger than the image are placed at random offsets; the outside is 0), z-scored per image.
No spatial or intensity augmentation (nnssl's MAE applies nnU-Net-style spatial transforms; not here).
"""
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nnfm.pretraining.mae.cases import ImageReader


def _start(rng: np.random.Generator, extent: int, size: int) -> int:
    if extent >= size:
        return int(rng.integers(0, extent - size + 1))
    return -int(rng.integers(0, size - extent + 1))      # the image lies at a random place inside the patch


class PatchStream(Dataset):
    def __init__(self, reader: ImageReader, cases: List[str], patch: Sequence[int], seed: int, batch_size: int,
                 first_step: int, last_step: int, rank: int = 0, world_size: int = 1, stream: int = 0):
        self.reader, self.cases, self.patch, self.seed = reader, list(cases), tuple(int(p) for p in patch), seed
        self.batch_size, self.first_step, self.rank, self.world_size = batch_size, first_step, rank, world_size
        self.stream = stream          # 0: training; other values: independent streams (e.g. BN recalibration)
        self.length = max(0, last_step - first_step) * batch_size

    def __len__(self) -> int:
        return self.length

    def sample(self, global_index: int) -> Dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.stream, global_index])
        case = self.cases[int(rng.integers(len(self.cases)))]
        shape = self.reader.shape(case)
        channel = int(rng.integers(shape[0]))
        start = [_start(rng, extent, size) for extent, size in zip(shape[1:], self.patch)]
        patch = self.reader.crop(case, channel, start, self.patch)
        return {"image": torch.from_numpy(patch)[None]}

    def __getitem__(self, k: int) -> Dict[str, torch.Tensor]:
        step, j = self.first_step + k // self.batch_size, k % self.batch_size
        return self.sample((step * self.world_size + self.rank) * self.batch_size + j)
