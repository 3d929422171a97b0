"""Throughput of the synthetic engine, and how many data workers keep a trainer fed."""
import math
import time

import torch

from nnfm.pretraining.synth.engine import SyntheticPairGenerator


def measure_samples_per_second(size: int, samples: int = 20, seed: int = 0, warmup: int = 2) -> float:
    """Samples (one label map + two views) per second on a single thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one DataLoader worker = one core
    try:
        generator = SyntheticPairGenerator(seed=seed, size=size)
        for index in range(warmup):
            generator.sample(10_000_000 + index)
        started = time.perf_counter()
        for index in range(samples):
            generator.sample(index)
        return samples / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)


def workers_needed(samples_per_second_per_worker: float, batch_size: int, step_seconds: float) -> int:
    """Workers (one core each) so data generation is not slower than training."""
    return math.ceil(batch_size / step_seconds / samples_per_second_per_worker)
