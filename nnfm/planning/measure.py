"""Measure the peak memory of real training steps, to check the planner's estimate.

CPU: peak resident memory of a fresh process minus its resident memory before the step.
GPU: torch.cuda.max_memory_allocated around the step (mixed precision, as nnU-Net trains).
"""
import json
import resource
import subprocess
import sys
from typing import Sequence

import torch


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure_training_step_peak(network: torch.nn.Module, in_channels: int, num_classes: int,
                               patch_size: Sequence[int], batch_size: int, device: str = "cpu",
                               steps: int = 2) -> int:
    """Peak bytes used by ``steps`` SGD steps (forward, CE loss on every output, backward, step)."""
    network = network.to(device).train()
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True)
    x = torch.randn(batch_size, in_channels, *patch_size, device=device)
    use_amp = device.startswith("cuda")
    if use_amp:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _current_rss_bytes()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=use_amp) if use_amp else torch.autocast("cpu", enabled=False):
            outputs = network(x)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            loss = sum(torch.nn.functional.cross_entropy(
                o, torch.randint(0, num_classes, (o.shape[0], *o.shape[2:]), device=device)) for o in outputs)
        loss.backward()
        optimizer.step()
    if use_amp:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - baseline
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak - baseline


def measure_in_subprocess(network_spec: dict, patch_size: Sequence[int], batch_size: int, device: str = "cpu") -> int:
    """Run ``measure_training_step_peak`` in a fresh interpreter so earlier allocations do not hide the peak.

    network_spec: {"class": "module.Class", "kwargs": {...}, "in_channels": int, "num_classes": int}
    """
    code = (
        "import json, pydoc, sys, torch\n"
        "from nnfm.planning.measure import measure_training_step_peak\n"
        "spec, patch, bs, device = json.loads(sys.argv[1])\n"
        "torch.manual_seed(0)\n"
        "net = pydoc.locate(spec['class'])(input_channels=spec['in_channels'], num_classes=spec['num_classes'],"
        " **spec['kwargs'])\n"
        "print(measure_training_step_peak(net, spec['in_channels'], spec['num_classes'], patch, bs, device))\n"
    )
    args = json.dumps([network_spec, list(patch_size), batch_size, device])
    out = subprocess.run([sys.executable, "-c", code, args], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])
