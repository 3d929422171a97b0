"""The head warm-up's frozen encoder survives DDP (issue 11): 2 gloo processes, real nnFMTrainer, real data.

Before: requires_grad was toggled after nnU-Net had wrapped the network in DDP; iteration 0 ran and
iteration 1 failed with "Expected to have finished reduction in the prior iteration".
"""
import json
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("ddp_freeze_worker.py")


def test_two_process_ddp_freezes_then_unfreezes_the_encoder(hippocampus, nnunet_env, tmp_path):
    out = tmp_path / "report.json"
    env = dict(nnunet_env, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(WORKER), str(hippocampus["preprocessed"]), str(tmp_path / "results"),
                          str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    for rank in (0, 1):
        report = json.loads(Path(f"{out}.{rank}").read_text())
        frozen, unfrozen = report["epochs"]
        assert frozen["frozen"] and not unfrozen["frozen"]
        # frozen: the optimiser moved only the heads; unfrozen: the encoder trains too
        assert frozen["heads_changed"] and not frozen["encoder_changed"], frozen
        assert unfrozen["encoder_changed"] and unfrozen["heads_changed"], unfrozen
        assert report["replicas_identical"]
