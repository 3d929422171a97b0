"""torch.distributed set-up for runs launched with torchrun (NCCL on GPUs, gloo on CPU), shared by the MAE,
DINO and synthetic SupCon pretraining loops: one process group per run (``distributed_run``), the model
wrapped in DDP only when there is more than one rank (``DistributedContext.wrap``)."""
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def make_folder(self, folder: Path) -> None:
        """Rank 0 creates ``folder``; every rank waits for it."""
        if self.is_main:
            Path(folder).mkdir(parents=True, exist_ok=True)
        self.barrier()

    def wrap(self, module: nn.Module, **ddp_kwargs) -> nn.Module:
        """``module`` in DistributedDataParallel (on this rank's GPU, or CPU/gloo) when there are several ranks."""
        if not self.enabled:
            return module
        device_ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **ddp_kwargs)

    def mean(self, value: float) -> float:
        """Average a scalar over ranks (for logging the global loss)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Reads torchrun's environment; a plain ``python`` call is a world of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank, world_size, local_rank, torch_device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_run(device: str = "auto") -> Iterator[DistributedContext]:
    """The run's process group: set up from torchrun's environment, torn down however the run ends."""
    context = setup_distributed(device)
    try:
        yield context
    finally:
        cleanup_distributed()
