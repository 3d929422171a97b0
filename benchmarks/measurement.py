"""How the speed/memory scripts in benchmarks/ measure: one method for every row, nnU-Net's trainer included.

Each row (trainer, plans) runs in a fresh process (the calling script again, with ``--worker TRAINER PLANS``),
so no row inherits another's allocations or warm caches. In it, nnU-Net's real training step runs (data
loading, augmentation, loss and optimiser step: ``nnUNetTrainer.train_step``) for ``--warmup`` iterations,
then ``--iterations`` timed ones. Peak memory is torch.cuda.max_memory_allocated on GPU (reset after warm-up)
and the process's peak resident memory on CPU. Ratios are relative to the first row, nnUNetTrainer measured
in the same run. FLOPs (ViT rows) are those of one forward + backward of the network, counted with
torch.utils.flop_counter.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

Row = Tuple[str, str]  # (trainer, plans)


def add_common_arguments(parser: argparse.ArgumentParser, iterations: int, device: str) -> None:
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--iterations", type=int, default=iterations)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default=device)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    parser.add_argument("--worker", nargs=2, metavar=("TRAINER", "PLANS"), help=argparse.SUPPRESS)


def default_device() -> str:
    return "cuda" if os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" else "cpu"


def measure(dataset: str, configuration: str, trainer_name: str, plans: str, iterations: int, warmup: int,
            device: str, batch_size: Optional[int] = None,
            extra: Optional[Callable[[object, dict], dict]] = None) -> dict:
    """s/iteration and peak memory of ``trainer_name`` on ``plans``; ``extra(trainer, result)`` adds keys
    (FLOPs, tokens/s) while the trainer still runs."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(dataset, configuration, 0, trainer_name, plans, device=torch.device(device))
    if batch_size:
        trainer.configuration_manager.configuration["batch_size"] = batch_size
    trainer.on_train_start()
    trainer.network.train()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        trainer.train_step(next(trainer.dataloader_train))
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = [float(trainer.train_step(next(trainer.dataloader_train))["loss"]) for _ in range(iterations)]
    sync()
    seconds = (time.perf_counter() - start) / iterations
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    config = trainer.configuration_manager
    result = {"trainer": trainer_name, "plans": plans, "patch_size": config.patch_size,
              "batch_size": config.batch_size, "s_per_iteration": seconds, "peak_memory_bytes": peak,
              "parameters": sum(p.numel() for p in trainer.network.parameters()), "last_loss": losses[-1],
              "device": device}
    if extra is not None:
        result.update(extra(trainer, result))
    # stop nnU-Net's background augmentation workers without writing a final checkpoint
    for loader in (trainer.dataloader_train, trainer.dataloader_val):
        if hasattr(loader, "_finish"):
            loader._finish()
    return result


def forward_backward_flops(network, data, autocast) -> int:
    """FLOPs (matmuls, convolutions, attention, as FlopCounterMode counts them) of one forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    network.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        with autocast:
            out = network(data)
            outputs = out if isinstance(out, (list, tuple)) else [out]
            sum(o.float().mean() for o in outputs).backward()
    network.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def require_plans(dataset: str, rows: Sequence[Row], fixes: Dict[str, str]) -> None:
    """Stop before measuring when a row's plans file is missing, naming the command that makes it."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    dataset_name = maybe_convert_to_dataset_name(dataset)
    for plans in sorted({p for _, p in rows}):
        if not os.path.isfile(os.path.join(nnUNet_preprocessed, dataset_name, plans + ".json")):
            raise SystemExit(f"{plans} is missing for {dataset_name}; run: {fixes[plans]}")


def measure_rows(script: str, rows: Sequence[Row], worker_args: List[str]) -> List[dict]:
    """Each row in a fresh process: ``script worker_args --worker TRAINER PLANS``, which prints ``RESULT {json}``."""
    # weights do not change speed or memory; a real checkpoint can be passed with nnFM_WEIGHTS
    env = dict(os.environ, nnFM_WEIGHTS=os.environ.get("nnFM_WEIGHTS", "random"), nnUNet_compile="0")
    results = []
    for trainer, plans in rows:
        print(f"measuring {trainer} on {plans} ...", flush=True)
        out = subprocess.run([sys.executable, script, *worker_args, "--worker", trainer, plans],
                             env=env, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            raise SystemExit(f"{trainer}/{plans} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    return results


def print_result(result: dict) -> None:
    """A worker's answer to measure_rows."""
    print("RESULT " + json.dumps(result))


def add_ratios(rows: List[dict]) -> None:
    """s/iteration and peak memory relative to the first row (nnUNetTrainer, measured in the same run)."""
    base = rows[0]
    for r in rows:
        r["s_per_iteration_ratio"] = r["s_per_iteration"] / base["s_per_iteration"]
        r["peak_memory_ratio"] = r["peak_memory_bytes"] / base["peak_memory_bytes"]


def write_rows(rows: List[dict], path: Optional[str]) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
