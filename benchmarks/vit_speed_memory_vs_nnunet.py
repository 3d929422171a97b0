"""2D ViT path vs nnU-Net: seconds per training iteration, peak memory, tokens/s and FLOP utilisation.

Rows, each in a fresh process on the same preprocessed dataset and, with ``--batch_size``, the same
batch size (nnU-Net's data loading, augmentation, loss and optimiser step included), after warm-up:
  nnUNetTrainer          on nnUNetPlans                    (2d, nnU-Net's own U-Net; the baseline)
  nnFMTrainer_MedDINOv3  on nnFMPlans_meddinov3_vitb16     (2d, MedDINOv3 ViT-B/16 + Primus-style decoder)
Peak memory: torch.cuda.max_memory_allocated on GPU, the process's peak resident memory on CPU.
FLOPs of one forward + backward of the network are counted with torch.utils.flop_counter; model
FLOP utilisation (MFU) = FLOPs per iteration / s per iteration / the device's peak (bf16 dense:
H100 and H200 989 TFLOP/s; other GPUs: pass --peak_tflops). Ratios are relative to nnUNetTrainer
(method: benchmarks/measurement.py).

Example (dataset converted with nnUNetv2_convert_MSD_dataset, planned with both
nnUNetv2_plan_and_preprocess -c 2d and nnFM_plan_and_preprocess -e meddinov3_vitb16):
  python benchmarks/vit_speed_memory_vs_nnunet.py -d 4 --iterations 5 --device cpu --batch_size 8
"""
import argparse

from measurement import (add_common_arguments, add_output_arguments, add_ratios, default_device,
                         forward_backward_flops, measure, measure_rows, print_result, require_plans, write_rows)

ROWS = [
    ("nnUNetTrainer", "nnUNetPlans"),
    ("nnFMTrainer_MedDINOv3", "nnFMPlans_meddinov3_vitb16"),
]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
PATCH = 16


def throughput(trainer, measured: dict, peak_tflops: float = None) -> dict:
    """FLOPs, pixels and tokens per second of the measured trainer."""
    import torch

    seconds, device = measured["s_per_iteration"], measured["device"]
    config = trainer.configuration_manager
    batch = trainer.batch_size
    data = next(trainer.dataloader_train)["data"].to(trainer.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16 if getattr(trainer, "use_bf16", False) else torch.float16) \
        if device == "cuda" else torch.autocast("cpu", enabled=False)
    flops = forward_backward_flops(trainer.network, data, autocast)
    pixels = int(torch.tensor(config.patch_size).prod())
    tokens = pixels // PATCH ** 2 if type(trainer).__name__ != "nnUNetTrainer" else None
    result = {"batch_size": batch, "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "flops_per_iteration": flops, "achieved_tflops": flops / seconds / 1e12,
              "pixels_per_s": batch * pixels / seconds,
              "tokens_per_patch": tokens, "tokens_per_s": batch * tokens / seconds if tokens else None}
    if device == "cuda":
        name = result["device_name"]
        peak_tflops = peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        result["peak_tflops"] = peak_tflops
        result["mfu"] = result["achieved_tflops"] / peak_tflops if peak_tflops else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, iterations=10, device=default_device())
    parser.add_argument("--batch_size", type=int, default=None,
                        help="the same batch size for every row (default: each plans' own; nnU-Net's 2d plans "
                             "choose very large batches for small images, too slow on a CPU)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="device peak for MFU (bf16 dense)")
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        print_result(measure(args.dataset, "2d", *args.worker, args.iterations, args.warmup, args.device,
                             args.batch_size, lambda trainer, measured: throughput(trainer, measured,
                                                                                   args.peak_tflops)))
        return

    require_plans(args.dataset, ROWS, {"nnUNetPlans": f"nnUNetv2_plan_and_preprocess -d {args.dataset} -c 2d",
                                       "nnFMPlans_meddinov3_vitb16": f"nnFM_plan_and_preprocess -d {args.dataset} "
                                                                     f"-e meddinov3_vitb16"})
    worker_args = ["-d", args.dataset, "--iterations", str(args.iterations), "--warmup", str(args.warmup),
                   "--device", args.device]
    if args.batch_size:
        worker_args += ["--batch_size", str(args.batch_size)]
    if args.peak_tflops:
        worker_args += ["--peak_tflops", str(args.peak_tflops)]
    rows = measure_rows(__file__, ROWS, worker_args)
    add_ratios(rows)
    print(f"\n{'trainer':<23}{'patch':<10}{'bs':>4}{'params M':>9}{'s/it':>9}{'peak MB':>9}{'GFLOP/it':>10}"
          f"{'TFLOP/s':>9}{'tokens/s':>10}{'MFU':>7}{'s/it ratio':>11}{'mem ratio':>10}")
    for r in rows:
        tokens = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "-"
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
        print(f"{r['trainer']:<23}{'x'.join(map(str, r['patch_size'])):<10}{r['batch_size']:>4}"
              f"{r['parameters'] / 1e6:>9.1f}{r['s_per_iteration']:>9.3f}{r['peak_memory_bytes'] / 2**20:>9.0f}"
              f"{r['flops_per_iteration'] / 1e9:>10.1f}{r['achieved_tflops']:>9.3f}{tokens:>10}{mfu:>7}"
              f"{r['s_per_iteration_ratio']:>11.2f}{r['peak_memory_ratio']:>10.2f}")
    write_rows(rows, args.output)


if __name__ == "__main__":
    main()

