"""Seconds per training iteration and peak memory: nnFM trainers vs nnU-Net's own trainer, in one run.

Each trainer runs in a fresh process on the same preprocessed dataset (nnU-Net's data loading,
augmentation, loss and optimiser step included), after warm-up iterations. Peak memory is
torch.cuda.max_memory_allocated on GPU and the process's peak resident memory on CPU.
Ratios are relative to nnUNetTrainer measured in the same run.

Example (dataset converted with nnUNetv2_convert_MSD_dataset, planned with both
nnUNetv2_plan_and_preprocess -c 3d_fullres and nnFM_plan_and_preprocess):
  python benchmarks/speed_memory_vs_nnunet.py -d 4 --iterations 10 --device cpu
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

# (trainer, plans) rows; the baseline row comes first
ROWS = [
    ("nnUNetTrainer", "nnUNetPlans"),
    ("nnFMTrainer", "nnUNetPlans"),          # same patch and batch as the baseline
    ("nnFMTrainer", "nnFMPlans_anatomix"),   # what the nnFM planner chose
]


def measure(dataset: str, trainer_name: str, plans: str, iterations: int, warmup: int, device: str) -> dict:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(dataset, "3d_fullres", 0, trainer_name, plans, device=torch.device(device))
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
    # stop nnU-Net's background augmentation workers without writing a final checkpoint
    for loader in (trainer.dataloader_train, trainer.dataloader_val):
        if hasattr(loader, "_finish"):
            loader._finish()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" else "cpu")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    parser.add_argument("--worker", nargs=2, metavar=("TRAINER", "PLANS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(measure(args.dataset, *args.worker, args.iterations, args.warmup, args.device)))
        return

    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    dataset_name = maybe_convert_to_dataset_name(args.dataset)
    for plans in sorted({p for _, p in ROWS}):
        if not os.path.isfile(os.path.join(nnUNet_preprocessed, dataset_name, plans + ".json")):
            fix = (f"nnUNetv2_plan_and_preprocess -d {args.dataset} -c 3d_fullres" if plans == "nnUNetPlans"
                   else f"nnFM_plan_and_preprocess -d {args.dataset}")
            raise SystemExit(f"{plans} is missing for {dataset_name}; run: {fix}")
    # weights do not change speed or memory; a real checkpoint can be passed with nnFM_WEIGHTS
    env = dict(os.environ, nnFM_WEIGHTS=os.environ.get("nnFM_WEIGHTS", "random"), nnUNet_compile="0")
    rows = []
    for trainer, plans in ROWS:
        print(f"measuring {trainer} on {plans} ...", flush=True)
        out = subprocess.run([sys.executable, __file__, "-d", args.dataset, "--iterations", str(args.iterations),
                              "--warmup", str(args.warmup), "--device", args.device, "--worker", trainer, plans],
                             env=env, capture_output=True, text=True)
        lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            raise SystemExit(f"{trainer}/{plans} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][len("RESULT "):]))

    base = rows[0]
    print(f"\n{'trainer':<16}{'plans':<20}{'patch':<16}{'bs':>3}{'s/it':>9}{'peak MB':>10}"
          f"{'s/it ratio':>12}{'mem ratio':>11}")
    for r in rows:
        r["s_per_iteration_ratio"] = r["s_per_iteration"] / base["s_per_iteration"]
        r["peak_memory_ratio"] = r["peak_memory_bytes"] / base["peak_memory_bytes"]
        print(f"{r['trainer']:<16}{r['plans']:<20}{'x'.join(map(str, r['patch_size'])):<16}{r['batch_size']:>3}"
              f"{r['s_per_iteration']:>9.3f}{r['peak_memory_bytes'] / 2**20:>10.0f}"
              f"{r['s_per_iteration_ratio']:>12.2f}{r['peak_memory_ratio']:>11.2f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
