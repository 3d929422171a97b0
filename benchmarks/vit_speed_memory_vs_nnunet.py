"""2D ViT path vs nnU-Net: seconds per training iteration, peak memory, tokens/s and FLOP utilisation.

Rows, each in a fresh process on the same preprocessed dataset and, with ``--batch_size``, the same
batch size (nnU-Net's data loading, augmentation, loss and optimiser step included), after warm-up:
  nnUNetTrainer          on nnUNetPlans                    (2d, nnU-Net's own U-Net; the baseline)
  nnFMTrainer_MedDINOv3  on nnFMPlans_meddinov3_vitb16     (2d, MedDINOv3 ViT-B/16 + Primus-style decoder)
Peak memory: torch.cuda.max_memory_allocated on GPU, the process's peak resident memory on CPU.
FLOPs of one forward + backward of the network are counted with torch.utils.flop_counter; model
FLOP utilisation (MFU) = FLOPs per iteration / s per iteration / the device's peak (bf16 dense:
H100 and H200 989 TFLOP/s; other GPUs: pass --peak_tflops). Ratios are relative to nnUNetTrainer.

Example (dataset converted with nnUNetv2_convert_MSD_dataset, planned with both
nnUNetv2_plan_and_preprocess -c 2d and nnFM_plan_and_preprocess -e meddinov3_vitb16):
  python benchmarks/vit_speed_memory_vs_nnunet.py -d 4 --iterations 5 --device cpu --batch_size 8
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROWS = [
    ("nnUNetTrainer", "nnUNetPlans"),
    ("nnFMTrainer_MedDINOv3", "nnFMPlans_meddinov3_vitb16"),
]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
PATCH = 16


def count_flops(network, data) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    network.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        out = network(data)
        outputs = out if isinstance(out, (list, tuple)) else [out]
        sum(o.float().mean() for o in outputs).backward()
    network.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def measure(dataset: str, trainer_name: str, plans: str, iterations: int, warmup: int, device: str,
            batch_size: int = None, peak_tflops: float = None) -> dict:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(dataset, "2d", 0, trainer_name, plans, device=torch.device(device))
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
    batch = trainer.batch_size
    data = next(trainer.dataloader_train)["data"].to(trainer.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16 if getattr(trainer, "use_bf16", False) else torch.float16) \
        if device == "cuda" else torch.autocast("cpu", enabled=False)
    with autocast:
        flops = count_flops(trainer.network, data)
    pixels = int(torch.tensor(config.patch_size).prod())
    tokens = pixels // PATCH ** 2 if trainer_name != "nnUNetTrainer" else None
    result = {"trainer": trainer_name, "plans": plans, "patch_size": config.patch_size, "batch_size": batch,
              "s_per_iteration": seconds, "peak_memory_bytes": peak,
              "parameters": sum(p.numel() for p in trainer.network.parameters()), "last_loss": losses[-1],
              "device": device, "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "flops_per_iteration": flops, "achieved_tflops": flops / seconds / 1e12,
              "pixels_per_s": batch * pixels / seconds,
              "tokens_per_patch": tokens, "tokens_per_s": batch * tokens / seconds if tokens else None}
    if device == "cuda":
        name = result["device_name"]
        peak_tflops = peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        result["peak_tflops"] = peak_tflops
        result["mfu"] = result["achieved_tflops"] / peak_tflops if peak_tflops else None
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
    parser.add_argument("--batch_size", type=int, default=None,
                        help="the same batch size for every row (default: each plans' own; nnU-Net's 2d plans "
                             "choose very large batches for small images, too slow on a CPU)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="device peak for MFU (bf16 dense)")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    parser.add_argument("--worker", nargs=2, metavar=("TRAINER", "PLANS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(measure(args.dataset, *args.worker, args.iterations, args.warmup, args.device,
                                             args.batch_size, args.peak_tflops)))
        return

    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    dataset_name = maybe_convert_to_dataset_name(args.dataset)
    for _, plans in ROWS:
        if not os.path.isfile(os.path.join(nnUNet_preprocessed, dataset_name, plans + ".json")):
            fix = (f"nnUNetv2_plan_and_preprocess -d {args.dataset} -c 2d" if plans == "nnUNetPlans"
                   else f"nnFM_plan_and_preprocess -d {args.dataset} -e meddinov3_vitb16")
            raise SystemExit(f"{plans} is missing for {dataset_name}; run: {fix}")
    env = dict(os.environ, nnFM_WEIGHTS=os.environ.get("nnFM_WEIGHTS", "random"), nnUNet_compile="0")
    rows = []
    for trainer, plans in ROWS:
        print(f"measuring {trainer} on {plans} ...", flush=True)
        command = [sys.executable, __file__, "-d", args.dataset, "--iterations", str(args.iterations),
                   "--warmup", str(args.warmup), "--device", args.device, "--worker", trainer, plans]
        if args.batch_size:
            command += ["--batch_size", str(args.batch_size)]
        if args.peak_tflops:
            command += ["--peak_tflops", str(args.peak_tflops)]
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            raise SystemExit(f"{trainer}/{plans} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][len("RESULT "):]))

    base = rows[0]
    print(f"\n{'trainer':<23}{'patch':<10}{'bs':>4}{'params M':>9}{'s/it':>9}{'peak MB':>9}{'GFLOP/it':>10}"
          f"{'TFLOP/s':>9}{'tokens/s':>10}{'MFU':>7}{'s/it ratio':>11}{'mem ratio':>10}")
    for r in rows:
        r["s_per_iteration_ratio"] = r["s_per_iteration"] / base["s_per_iteration"]
        r["peak_memory_ratio"] = r["peak_memory_bytes"] / base["peak_memory_bytes"]
        tokens = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "-"
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
        print(f"{r['trainer']:<23}{'x'.join(map(str, r['patch_size'])):<10}{r['batch_size']:>4}"
              f"{r['parameters'] / 1e6:>9.1f}{r['s_per_iteration']:>9.3f}{r['peak_memory_bytes'] / 2**20:>9.0f}"
              f"{r['flops_per_iteration'] / 1e9:>10.1f}{r['achieved_tflops']:>9.3f}{tokens:>10}{mfu:>7}"
              f"{r['s_per_iteration_ratio']:>11.2f}{r['peak_memory_ratio']:>10.2f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
