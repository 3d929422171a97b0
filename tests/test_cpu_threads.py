"""nnFM's CPU thread choice (nnfm/training/cpu_threads.py): usable cores, the CPU share other processes take,
and its place in nnFM's networks (training and nnUNetv2_predict build through the trainers)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nnfm.training import cpu_threads
from nnfm.training.cpu_threads import CPUShare, attach, cgroup_cpu_limit, usable_cores


@pytest.fixture(autouse=True)
def keep_threads(monkeypatch):
    monkeypatch.delenv("nnFM_CPU_THREADS", raising=False)
    monkeypatch.delenv("nnFM_CPU_FAST_PATH", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(str(tmp_path)) is None


def test_usable_cores_follow_affinity_and_quota(monkeypatch):
    # nnU-Net's cpu_count() would say 64 here: a container with 2 CPUs of a 64-CPU host
    monkeypatch.setattr(cpu_threads.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_limit", lambda: None)
    assert usable_cores() == 4
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_limit", lambda: 1.5)
    assert usable_cores() == 2


class FakeMachine:
    """Clock and tick counters that a test advances: others use ``others`` cores, this process ``own``."""

    def __init__(self, monkeypatch, cores=2):
        self.now, self.busy, self.own = 100.0, 0, 0
        monkeypatch.setattr(cpu_threads, "usable_cores", lambda: cores)
        monkeypatch.setattr(cpu_threads, "_busy_ticks", lambda: self.busy)
        monkeypatch.setattr(cpu_threads, "own_ticks", lambda: self.own)
        monkeypatch.setattr(cpu_threads.time, "monotonic", lambda: self.now)
        self.tick = cpu_threads.os.sysconf("SC_CLK_TCK")

    def run(self, seconds, others, own):
        self.now += seconds
        self.own += int(own * seconds * self.tick)
        self.busy += int((own + others) * seconds * self.tick)


def test_threads_drop_when_another_process_takes_a_core_and_come_back(monkeypatch):
    machine, lines = FakeMachine(monkeypatch), []
    share = CPUShare(interval_s=2.0, report=lines.append)
    share.can_measure = True
    assert share.update() == 2 and torch.get_num_threads() == 2
    machine.run(1.0, others=1.0, own=1.0)
    assert share.update() == 2  # too early to tell: no /proc reading before interval_s
    machine.run(1.5, others=1.0, own=1.0)
    assert share.update() == 1 and torch.get_num_threads() == 1
    machine.run(3.0, others=1.0, own=1.0)
    assert share.update() == 1
    machine.run(3.0, others=0.1, own=1.9)  # the other job ended
    assert share.update() == 2 and torch.get_num_threads() == 2
    assert len(lines) == 3 and "1 intra-op thread (other processes used 1.0 of 2 cores" in lines[1]


def test_own_work_is_not_counted_as_other_processes(monkeypatch):
    machine = FakeMachine(monkeypatch)
    share = CPUShare(interval_s=1.0, report=lambda m: None)
    share.can_measure = True
    share.update()
    machine.run(5.0, others=0.0, own=2.0)  # this process and its augmentation workers use both cores
    assert share.update() == 2 and share.others == pytest.approx(0.0, abs=0.05)


def test_a_count_set_by_someone_else_is_put_back(monkeypatch):
    """nnU-Net's predictor sets torch's threads per case and restores what it found: the choice must hold anyway."""
    machine = FakeMachine(monkeypatch)
    share = CPUShare(interval_s=2.0, report=lambda m: None)
    share.can_measure = True
    share.update()
    machine.run(3.0, others=1.0, own=1.0)
    assert share.update() == 1
    torch.set_num_threads(2)  # predict_logits_from_preprocessed_data's restore at the end of a case
    machine.run(0.5, others=1.0, own=1.0)  # before the next measurement
    assert share.update() == 1 and torch.get_num_threads() == 1


def test_fixed_thread_count(monkeypatch):
    machine = FakeMachine(monkeypatch, cores=2)
    monkeypatch.setenv("nnFM_CPU_THREADS", "1")
    share = CPUShare(interval_s=1.0, report=lambda m: None)
    share.can_measure = True
    assert share.update() == 1
    machine.run(5.0, others=0.0, own=1.0)
    assert share.update() == 1


def test_omp_num_threads_caps_the_count(monkeypatch):
    FakeMachine(monkeypatch, cores=4)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    share = CPUShare(interval_s=1.0, report=lambda m: None)
    assert share.start() == 1
    monkeypatch.setenv("nnFM_CPU_THREADS", "2")  # a fixed count is capped too (a test's OMP_NUM_THREADS=1 holds)
    assert CPUShare(interval_s=1.0, report=lambda m: None).start() == 1


def test_attach_once_and_off_switch(monkeypatch):
    net = torch.nn.Conv3d(1, 2, 3)
    share = attach(net)
    assert share is not None and attach(net) is share and len(net._forward_pre_hooks) == 1
    calls = []
    share.update = lambda: calls.append(1)
    net(torch.zeros(1, 1, 4, 4, 4))
    assert calls == [1]
    monkeypatch.setenv("nnFM_CPU_FAST_PATH", "0")
    assert attach(torch.nn.Conv3d(1, 2, 3)) is None


def test_measures_a_real_busy_process():
    """A CPU-bound process in its own session shows up as about one core used by others (not by us)."""
    if not cpu_threads.os.path.isfile("/proc/stat"):
        pytest.skip("no /proc")
    # started through a shell that exits at once: the spinner is not this process's child (children count as own)
    pid = int(subprocess.run(["sh", "-c", f"setsid {sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                             capture_output=True, text=True, check=True).stdout)
    try:
        time.sleep(0.5)
        share = CPUShare(interval_s=1.0, report=lambda m: None)
        share.start()
        time.sleep(1.5)
        others = share.others_cores()
    finally:
        os.kill(pid, signal.SIGKILL)
    assert others is not None and others > 0.5


def test_anatomix_channels_last_gives_the_same_outputs():
    """The anatomix U-Net trains in channels_last_3d on the CPU (registry flag): same function, other memory order."""
    from nnfm.registry import get_encoder
    from nnfm_trainers.nnfm_trainer import nnFMTrainer

    assert get_encoder("anatomix").cpu_channels_last
    torch.manual_seed(0)
    net = nnFMTrainer.network_class()(1, 3, True, **get_encoder("anatomix").kwargs()).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        reference = net(x)
        net.to(memory_format=torch.channels_last_3d)
        assert net.encoder.parameters().__next__().is_contiguous(memory_format=torch.channels_last_3d)
        fast = net(x)
    for a, b in zip(reference, fast):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
