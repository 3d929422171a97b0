"""Intra-op threads on the CPU from the share of it this process actually gets, re-checked while it runs.

nnU-Net sets ``torch.set_num_threads(multiprocessing.cpu_count())`` on the CPU (nnunetv2 2.8.1
run/run_training.py, predict_from_raw_data.py) and keeps it. Two things go wrong on a user's machine:

- ``cpu_count()`` counts the host's CPUs, not the ones this process may use (``taskset``, a container's cpuset or
  CPU quota): a container limited to 2 of 64 CPUs starts 64 threads.
- torch's OpenMP threads spin at barriers. When another process takes one of the cores (Linux's autogroup
  scheduler gives another terminal's job a fair share whatever its nice value), a two-thread step waits for the
  descheduled thread: measured 10x slower on this project's 2-core CPU (documentation/benchmarks.md, issue 29),
  while one thread is only 2x slower (the other core is gone either way).

``CPUShare`` therefore counts the usable cores (affinity and cgroup quota; at most ``OMP_NUM_THREADS`` when set,
which also caps ``nnFM_CPU_THREADS``), measures every ``interval_s`` how many of them other processes used (``/proc/stat`` minus this process and its children, i.e. nnU-Net's augmentation
workers), and sets ``torch.set_num_threads(usable - others)`` (at least 1). It is a forward pre-hook of nnFM's
networks on the CPU, so ``nnUNetv2_train -tr nnFM...`` and ``nnUNetv2_predict`` of an nnFM model both use it, and
of the networks ``nnFM_pretrain`` trains on the CPU (hours-long runs on a machine that is also used otherwise).
``nnFM_CPU_THREADS=N`` fixes the count; ``nnFM_CPU_FAST_PATH=0`` leaves nnU-Net's choice alone.
"""
import math
import os
import time
from typing import Callable, Optional

import torch

FAST_PATH_VARIABLE = "nnFM_CPU_FAST_PATH"
THREADS_VARIABLE = "nnFM_CPU_THREADS"


def fast_path_enabled(env=os.environ) -> bool:
    return env.get(FAST_PATH_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> Optional[float]:
    """CPUs allowed by the cgroup's CFS quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); None when unlimited."""
    try:
        quota, period = open(os.path.join(root, "cpu.max")).read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(open(os.path.join(root, "cpu", "cpu.cfs_quota_us")).read())
        period = int(open(os.path.join(root, "cpu", "cpu.cfs_period_us")).read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def _busy_ticks() -> int:
    """Clock ticks all CPUs spent busy (user, nice, system, irq, softirq, steal) since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))


def _process_ticks(pid) -> int:
    """utime + stime of a process (all its threads) in clock ticks; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _children(pid="self") -> list:
    pids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += f.read().split()
    except OSError:
        pass
    return pids


def own_ticks() -> int:
    """Ticks used by this process, its children and grandchildren (nnU-Net's augmentation workers and theirs)."""
    total, frontier = _process_ticks("self"), _children()
    for _ in range(2):
        total += sum(_process_ticks(p) for p in frontier)
        frontier = [c for p in frontier for c in _children(p)]
    return total


class CPUShare:
    """Sets torch's intra-op threads to the cores other processes leave free (see the module docstring).

    ``report(message)`` receives a line whenever the count changes (the trainer's log, or stdout in prediction).
    """

    def __init__(self, interval_s: float = 2.0, report: Optional[Callable[[str], None]] = None):
        self.interval_s = interval_s
        self.report = report or (lambda message: print(message, flush=True))
        self.cores = usable_cores()
        omp = os.environ.get("OMP_NUM_THREADS", "").strip()
        if omp.isdigit() and int(omp) > 0:
            self.cores = min(self.cores, int(omp))  # the user's explicit cap (nnU-Net itself ignores it)
        fixed = os.environ.get(THREADS_VARIABLE)
        self.fixed = min(int(fixed), self.cores) if fixed else None
        self._last = None  # (monotonic s, busy ticks, own ticks)
        self.threads = None
        self.others = 0.0
        self.can_measure = os.path.isfile("/proc/stat")

    def start(self) -> int:
        """Set the first count (all usable cores, or nnFM_CPU_THREADS) and start measuring."""
        self._set(self.fixed or self.cores, "start")
        self._sample()
        return self.threads

    def _sample(self):
        if self.can_measure:
            self._last = (time.monotonic(), _busy_ticks(), own_ticks())

    def others_cores(self) -> Optional[float]:
        """Cores other processes used since the last sample (None when too early to tell)."""
        if self._last is None:
            return None
        now = time.monotonic()
        if now - self._last[0] < self.interval_s:
            return None
        then, busy, own = self._last
        self._sample()
        ticks = os.sysconf("SC_CLK_TCK")
        return max(0.0, ((self._last[1] - busy) - (self._last[2] - own)) / ticks / (now - then))

    def update(self) -> int:
        """Re-check at most every ``interval_s``; returns the thread count in use."""
        if self.threads is None:
            return self.start()
        others = None if self.fixed is not None else self.others_cores()
        if others is not None:
            self.others = others
            # a core is "taken" when another process used at least half of it
            wanted = max(1, self.cores - int(others + 0.5))
            if wanted != self.threads:
                self._set(wanted, f"other processes used {others:.1f} of {self.cores} cores")
        if torch.get_num_threads() != self.threads:
            # nnU-Net's predictor sets its own count per case and restores the one it found afterwards
            torch.set_num_threads(self.threads)
        return self.threads

    def _set(self, threads: int, why: str) -> None:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if threads != self.threads:
            self.report(f"nnFM CPU: {threads} intra-op thread{'s' if threads > 1 else ''} ({why}; usable cores "
                        f"{self.cores}; nnFM_CPU_THREADS fixes it, nnFM_CPU_FAST_PATH=0 leaves nnU-Net's)")
        self.threads = threads

    def __call__(self, module, args):
        """Forward pre-hook: adapt before a forward on CPU tensors (the first argument, or its first element)."""
        first = args[0] if args else None
        if isinstance(first, (list, tuple)) and first:
            first = first[0]
        if isinstance(first, torch.Tensor) and first.device.type == "cpu":
            self.update()


def attach(network: torch.nn.Module, report: Optional[Callable[[str], None]] = None) -> Optional[CPUShare]:
    """Register a CPUShare on ``network`` (once) unless nnFM_CPU_FAST_PATH=0; returns it."""
    if not fast_path_enabled():
        return None
    existing = getattr(network, "_nnfm_cpu_share", None)
    if existing is not None:
        if report is not None:
            existing.report = report
        return existing
    share = CPUShare(report=report)
    network.register_forward_pre_hook(share)
    network._nnfm_cpu_share = share
    return share


def adapts_cpu_threads(build):
    """Decorator for a trainer's ``build_network_architecture`` (under ``@classmethod``): the built network carries
    a CPUShare, so training and ``nnUNetv2_predict`` of the model (which builds through it) both adapt."""
    import functools

    @functools.wraps(build)
    def wrapper(cls, *args, **kwargs):
        network = build(cls, *args, **kwargs)
        attach(network)
        return network

    return wrapper
