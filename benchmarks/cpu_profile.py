"""Where a CPU training iteration and a predicted case spend their time: nnFM's trainers vs nnU-Net's own, one run.

    python benchmarks/cpu_profile.py -d 904 --iterations 20 [--busy] [--output profile.json]

Each row (trainer, plans, environment) runs in a fresh process (benchmarks/measurement.py) on the same preprocessed
dataset at the same patch and batch (nnFM_PATCH_SIZE / nnFM_BATCH_SIZE if set, else the plans'). In it:

- training, end to end: nnU-Net's real loop (``run_training``'s body: ``train_step(next(dataloader_train))``,
  validation steps, ``on_epoch_end`` with its checkpoint and progress plot) for ``--epochs`` epochs of
  ``--iterations``; s/iteration = median epoch time / iterations (as nnFM_benchmark reports it).
- training, by phase (``--iterations`` more steps): waiting for the next batch (nnU-Net's augmentation workers;
  time the main process is blocked in ``next``), forward + loss, backward, gradient clipping + optimiser step.
  Operator time is the sum of torch.profiler's self CPU times of one step; "python" is the step's wall time minus
  it (Python, autograd bookkeeping, threads waiting at barriers).
- throughput: FLOPs of one forward + backward (torch.utils.flop_counter, convolutions and matmuls) over the
  measured forward + backward time, against this CPU's practical peak = a 4096^3 fp32 matmul's GFLOP/s with the
  same threads, measured in the same process.
- prediction, per case (``--cases`` images of imagesTr, no mirroring as ``--disable_tta``): nnU-Net's predictor
  (``nnUNetPredictor``, tile step 0.5, Gaussian) split into preprocessing (``run_case``: read, crop, resample,
  normalise), sliding-window network time and export (resample back, write the NIfTI).

``--busy`` adds, for every row, the same measurement with one CPU-bound process started in its own session (as a
user's other job: Linux's autogroup scheduler then gives it a fair share of the CPU whatever its nice value)
and prints the slowdown. Ratios are to the first row, nnUNetTrainer as nnU-Net ships it (the nnFM CPU fast path
switched off in its process: nnFM_CPU_FAST_PATH=0), measured in the same run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from measurement import (add_common_arguments, add_output_arguments, forward_backward_flops, measure_rows, require_plans,
                         write_rows)

# (trainer, plans, extra environment); the reference row first. nnFMTrainer_nnUNetPlans_scratch is nnU-Net's own
# network and recipe through nnFM's trainer (its CPU fast path; nnFM's default since issue 27 is that network from
# pretrained weights, the same cost per iteration), nnFMTrainer the anatomix encoder (the default until issue 27).
# nnUNetTrainer_nnFMBudget is nnUNetTrainer unchanged but for nnFM_PATCH_SIZE / nnFM_BATCH_SIZE (trainers/nnunet_baseline.py)
ROWS = [
    ("nnUNetTrainer_nnFMBudget", "nnUNetPlans", {"nnFM_CPU_FAST_PATH": "0"}),
    ("nnFMTrainer_nnUNetPlans_scratch", "nnUNetPlans", {}),
    ("nnFMTrainer", "nnFMPlans_anatomix", {}),
    ("nnFMTrainer", "nnFMPlans_anatomix", {"nnFM_CPU_FAST_PATH": "0"}),  # the anatomix encoder without the fast path
]
PHASES = ("wait", "forward", "backward", "optimizer")


def _time(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def matmul_peak_gflops(n: int = 4096, repeats: int = 4) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def phase_step(trainer, batch) -> dict:
    """nnUNetTrainer.train_step's work (fp32 on CPU), timed by phase."""
    import torch

    times = {}
    start = time.perf_counter()
    data = batch["data"].to(trainer.device)
    target = [t.to(trainer.device) for t in batch["target"]] if isinstance(batch["target"], list) \
        else batch["target"].to(trainer.device)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss = trainer.loss(trainer.network(data), target)
    times["forward"] = time.perf_counter() - start
    _, times["backward"] = _time(loss.backward)
    start = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), getattr(trainer, "grad_clip", 12))
    trainer.optimizer.step()
    times["optimizer"] = time.perf_counter() - start
    return times


def operator_seconds(trainer) -> tuple:
    """(wall s, summed self CPU s of torch operators) of one real train_step."""
    from torch.profiler import ProfilerActivity, profile

    batch = next(trainer.dataloader_train)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _, wall = _time(trainer.train_step, batch)
    return wall, sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6


def train_epochs(trainer, epochs: int) -> list:
    """run_training's loop body, epoch times in seconds."""
    import torch

    durations = []
    for _ in range(epochs):
        start = time.perf_counter()
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(trainer.num_iterations_per_epoch)]
        trainer.on_train_epoch_end(outputs)
        with torch.no_grad():
            trainer.on_validation_epoch_start()
            val = [trainer.validation_step(next(trainer.dataloader_val))
                   for _ in range(trainer.num_val_iterations_per_epoch)]
            trainer.on_validation_epoch_end(val)
        trainer.on_epoch_end()
        durations.append(time.perf_counter() - start)
    return durations


def predict_cases(trainer, cases: int, out_folder: str) -> dict:
    """Per-case seconds of nnU-Net's predictor (no mirroring) on the first ``cases`` training images."""
    import torch
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, device=trainer.device,
                                perform_everything_on_device=False, verbose=False, allow_tqdm=False)
    trainer.set_deep_supervision_enabled(False)  # as nnU-Net's final validation and nnUNetv2_predict build it
    net = trainer.network._orig_mod if hasattr(trainer.network, "_orig_mod") else trainer.network
    net.eval()
    predictor.manual_initialization(net, trainer.plans_manager, trainer.configuration_manager,
                                    [{k: v.clone() for k, v in net.state_dict().items()}], trainer.dataset_json,
                                    trainer.__class__.__name__, None)
    images = os.path.join(nnUNet_raw, trainer.plans_manager.dataset_name, "imagesTr")
    files = create_lists_from_splitted_dataset_folder(images, trainer.dataset_json["file_ending"])[:cases]
    preprocessor = trainer.configuration_manager.preprocessor_class(verbose=False)
    times = {"preprocess": [], "network": [], "export": []}
    for i, case in enumerate(files):
        (data, _, properties), t = _time(preprocessor.run_case, case, None, trainer.plans_manager,
                                         trainer.configuration_manager, trainer.dataset_json)
        times["preprocess"].append(t)
        logits, t = _time(predictor.predict_logits_from_preprocessed_data, torch.from_numpy(data))
        times["network"].append(t)
        _, t = _time(export_prediction_from_logits, logits, properties, trainer.configuration_manager,
                     trainer.plans_manager, trainer.dataset_json, os.path.join(out_folder, f"case_{i}"), False)
        times["export"].append(t)
    return {f"predict_{k}_s": statistics.median(v) for k, v in times.items()} | {"predict_cases": len(files)}


def worker(dataset: str, trainer_name: str, plans: str, args) -> dict:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    # as nnUNetv2_train does on CPU (nnunetv2 2.8.1 run/run_training.py): one intra-op thread per CPU
    torch.set_num_threads(os.cpu_count())
    trainer = get_trainer_from_args(dataset, "3d_fullres", 0, trainer_name, plans, device=torch.device("cpu"))
    trainer.num_iterations_per_epoch = args.iterations
    trainer.num_val_iterations_per_epoch = args.val_iterations
    trainer.on_train_start()
    epochs = train_epochs(trainer, args.epochs)
    trainer.network.train()
    phases = {k: [] for k in PHASES}
    for _ in range(args.iterations):
        batch, wait = _time(next, trainer.dataloader_train)
        phases["wait"].append(wait)
        for k, v in phase_step(trainer, batch).items():
            phases[k].append(v)
    step_wall, op_s = operator_seconds(trainer)
    batch = next(trainer.dataloader_train)
    flops = forward_backward_flops(trainer.network, batch["data"], torch.autocast("cpu", enabled=False))
    peak = matmul_peak_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        prediction = predict_cases(trainer, args.cases, tmp)
    for loader in (trainer.dataloader_train, trainer.dataloader_val):
        if hasattr(loader, "_finish"):
            loader._finish()
    median = {k: statistics.median(v) for k, v in phases.items()}
    fwd_bwd = median["forward"] + median["backward"]
    config = trainer.configuration_manager
    return {"trainer": trainer_name, "plans": plans, "patch_size": config.patch_size,
            "batch_size": config.batch_size, "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(libgomp default)"),
            "s_per_iteration": statistics.median(epochs[1:] or epochs) / args.iterations,
            **{f"{k}_s": v for k, v in median.items()},
            "step_wall_s": step_wall, "operator_s": op_s, "python_s": max(step_wall - op_s, 0.0),
            "gflop": flops / 1e9, "achieved_gflops": flops / 1e9 / fwd_bwd, "matmul_peak_gflops": peak,
            **prediction}


def busy_process() -> subprocess.Popen:
    """One CPU-bound process in its own session (its own autogroup), as a user's unrelated job."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)


def rows_with_environment(script: str, worker_args: list) -> list:
    results = []
    for trainer, plans, env in ROWS:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            results += measure_rows(script, [(trainer, plans)], worker_args)
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        results[-1]["environment"] = env
    return results


COLUMNS = [("s_per_iteration", "s/it"), ("wait_s", "wait"), ("forward_s", "fwd"), ("backward_s", "bwd"),
           ("optimizer_s", "opt"), ("python_s", "python"), ("achieved_gflops", "GFLOP/s"),
           ("predict_preprocess_s", "pred prep"), ("predict_network_s", "pred net"), ("predict_export_s", "pred exp")]


def label(row: dict) -> str:
    fast_path_off = row.get("environment", {}).get("nnFM_CPU_FAST_PATH") == "0"
    return row["trainer"] + (" (fast path off)" if fast_path_off and row["trainer"].startswith("nnFM") else "")


def print_table(rows: list, title: str) -> None:
    base = rows[0]
    print(f"\n{title} (ratio to {base['trainer']} in brackets; seconds unless stated)")
    print(f"{'trainer':<50}" + "".join(f"{h:>17}" for _, h in COLUMNS) + f"{'% of peak':>11}")
    for r in rows:
        cells = "".join(f"{r[k]:>8.3f} ({r[k] / base[k] if base[k] else float('nan'):4.2f}x)" for k, _ in COLUMNS)
        print(f"{label(r):<50}{cells}{100 * r['achieved_gflops'] / r['matmul_peak_gflops']:>10.0f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, iterations=20, device="cpu")
    add_output_arguments(parser)
    parser.add_argument("--epochs", type=int, default=3, help="end-to-end epochs (the first is not counted)")
    parser.add_argument("--val-iterations", type=int, default=4)
    parser.add_argument("--cases", type=int, default=5, help="cases predicted per row")
    parser.add_argument("--busy", action="store_true", help="also measure beside one CPU-bound process")
    parser.add_argument("--figure", default=None, help="write a bar chart of s/iteration (idle, busy) here")
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.dataset, *args.worker, args)))
        return
    require_plans(args.dataset, [(t, p) for t, p, _ in ROWS],
                  {"nnUNetPlans": f"nnUNetv2_plan_and_preprocess -d {args.dataset} -c 3d_fullres",
                   "nnFMPlans_anatomix": f"nnFM_plan_and_preprocess -d {args.dataset}"})
    worker_args = ["-d", args.dataset, "--iterations", str(args.iterations), "--epochs", str(args.epochs),
                   "--val-iterations", str(args.val_iterations), "--cases", str(args.cases)]
    # a fresh results folder: no row meets a finished fold, and nothing is left in the user's
    results = tempfile.TemporaryDirectory(prefix="nnfm_cpu_profile_")
    os.environ["nnUNet_results"] = results.name
    idle = rows_with_environment(os.path.abspath(__file__), worker_args)
    print_table(idle, "idle machine")
    out = {"idle": idle}
    if args.busy:
        background = busy_process()
        try:
            busy = rows_with_environment(os.path.abspath(__file__), worker_args)
        finally:
            background.kill()
        print_table(busy, "one CPU-bound process beside it")
        print("\nslowdown from the busy process (s/iteration busy / idle, same trainer):")
        for a, b in zip(idle, busy):
            print(f"  {label(a):<50}{b['s_per_iteration'] / a['s_per_iteration']:5.2f}x   "
                  f"prediction network {b['predict_network_s'] / a['predict_network_s']:5.2f}x")
        out["busy"] = busy
    write_rows([out], args.output)
    if args.figure:
        plot(out, args.figure)


def plot(out: dict, path: str) -> None:
    """s/iteration per row, idle and (if measured) beside a busy process, as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [label(r) for r in out["idle"]]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.38
    for i, (key, colour) in enumerate((("idle", "tab:blue"), ("busy", "tab:red"))):
        if key not in out:
            continue
        values = [r["s_per_iteration"] for r in out[key]]
        bars = ax.bar([x + (i - 0.5) * width for x in range(len(names))], values, width, color=colour,
                      label="idle machine" if key == "idle" else "one CPU-bound process beside it")
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.set_ylabel("s / training iteration")
    ax.set_title(f"CPU training, patch {'x'.join(map(str, out['idle'][0]['patch_size']))}, batch "
                 f"{out['idle'][0]['batch_size']} (benchmarks/cpu_profile.py)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
