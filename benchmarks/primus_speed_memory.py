"""Primus rows of the speed/memory comparison: s/iteration and peak memory vs nnUNetTrainer 3d_fullres,
plus tokens/s and model FLOP utilisation (torch.utils.flop_counter) for the ViT.

Same method as benchmarks/speed_memory_vs_nnunet.py (benchmarks/measurement.py): a fresh
process per row, nnU-Net's real training step (data loading, augmentation, loss, optimiser step)
after warm-up iterations, ratios relative to nnUNetTrainer in the same run. FLOPs are those of one
forward + backward of the network on a batch of the planned size (matmuls and convolutions, as
FlopCounterMode counts them); achieved FLOP/s = FLOPs / (s/iteration), which includes data
loading. MFU = achieved / ``--peak_tflops`` (the device's dense peak for the training dtype, e.g.
989 for H100 SXM bf16); printed only when a peak is given.

  nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres
  nnFM_plan_and_preprocess -d 4 -e primus_tiny        # and/or -e primus_m
  python benchmarks/primus_speed_memory.py -d 4 --iterations 5 --device cpu
  python benchmarks/primus_speed_memory.py -d 4 --device cuda --primus_m --peak_tflops 989
"""
import argparse

from measurement import (add_common_arguments, add_output_arguments, add_ratios, forward_backward_flops, measure,
                         measure_rows, print_result, write_rows)

BASELINE = ("nnUNetTrainer", "nnUNetPlans")
TINY_ROWS = [("nnFMTrainer_PrimusTiny_scratch", "nnUNetPlans"),          # nnU-Net's patch and batch
             ("nnFMTrainer_PrimusTiny_scratch", "nnFMPlans_primus_tiny")]  # what the nnFM planner chose
PRIMUS_M_ROWS = [("nnFMTrainer_Primus_scratch", "nnFMPlans_primus_m")]


def flops_per_iteration(trainer, measured: dict) -> dict:
    """FLOPs of one forward + backward at the planned batch and patch, and the tokens it processes."""
    import torch

    device = measured["device"]
    config = trainer.configuration_manager
    channels = len(trainer.dataset_json["channel_names"])
    x = torch.randn(config.batch_size, channels, *config.patch_size, device=device)
    autocast = trainer._autocast() if hasattr(trainer, "_autocast") else torch.autocast(device, enabled=False)
    tokens = getattr(trainer.network, "num_tokens", None)
    return {"flops_per_iteration": forward_backward_flops(trainer.network, x, autocast),
            "tokens_per_iteration": tokens * config.batch_size if tokens else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, iterations=5, device="cpu")
    parser.add_argument("--primus_m", action="store_true", help="add the Primus-M row (needs nnFMPlans_primus_m)")
    parser.add_argument("--no_tiny", action="store_true", help="leave out the tiny Primus rows")
    parser.add_argument("--peak_tflops", type=float, default=None, help="device peak for MFU (dense, training dtype)")
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        extra = flops_per_iteration if args.worker[0] != BASELINE[0] else None
        print_result(measure(args.dataset, "3d_fullres", *args.worker, args.iterations, args.warmup, args.device,
                             extra=extra))
        return

    rows_wanted = [BASELINE] + ([] if args.no_tiny else TINY_ROWS) + (PRIMUS_M_ROWS if args.primus_m else [])
    rows = measure_rows(__file__, rows_wanted, ["-d", args.dataset, "--iterations", str(args.iterations),
                                                "--warmup", str(args.warmup), "--device", args.device])
    add_ratios(rows)
    print(f"\n{'trainer':<32}{'plans':<23}{'patch':<12}{'bs':>3}{'s/it':>8}{'peak MB':>9}{'s/it x':>8}"
          f"{'mem x':>7}{'tokens/s':>10}{'GFLOP/it':>10}{'GFLOP/s':>9}{'MFU':>7}")
    for r in rows:
        flops = r.get("flops_per_iteration")
        r["tokens_per_s"] = r["tokens_per_iteration"] / r["s_per_iteration"] if r.get("tokens_per_iteration") else None
        r["achieved_flops_per_s"] = flops / r["s_per_iteration"] if flops else None
        r["mfu"] = r["achieved_flops_per_s"] / (args.peak_tflops * 1e12) if flops and args.peak_tflops else None
        cell = lambda v, fmt: format(v, fmt) if v is not None else "-"  # noqa: E731
        print(f"{r['trainer']:<32}{r['plans']:<23}{'x'.join(map(str, r['patch_size'])):<12}{r['batch_size']:>3}"
              f"{r['s_per_iteration']:>8.3f}{r['peak_memory_bytes'] / 2**20:>9.0f}{r['s_per_iteration_ratio']:>8.2f}"
              f"{r['peak_memory_ratio']:>7.2f}{cell(r['tokens_per_s'], '>10.0f'):>10}"
              f"{cell(flops / 1e9 if flops else None, '>10.1f'):>10}"
              f"{cell(r['achieved_flops_per_s'] / 1e9 if flops else None, '>9.1f'):>9}{cell(r['mfu'], '>7.1%'):>7}")
    write_rows(rows, args.output)


if __name__ == "__main__":
    main()
