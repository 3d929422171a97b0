"""Seconds per training iteration and peak memory: nnFM trainers vs nnU-Net's own trainer, in one run.

Each trainer runs in a fresh process on the same preprocessed dataset (nnU-Net's data loading,
augmentation, loss and optimiser step included), after warm-up iterations. Peak memory is
torch.cuda.max_memory_allocated on GPU and the process's peak resident memory on CPU.
Ratios are relative to nnUNetTrainer measured in the same run (method: benchmarks/measurement.py).

Example (dataset converted with nnUNetv2_convert_MSD_dataset, planned with both
nnUNetv2_plan_and_preprocess -c 3d_fullres and nnFM_plan_and_preprocess):
  python benchmarks/speed_memory_vs_nnunet.py -d 4 --iterations 10 --device cpu
"""
import argparse

from measurement import (add_common_arguments, add_output_arguments, add_ratios, default_device, measure,
                         measure_rows, print_result, require_plans, write_rows)

# (trainer, plans) rows; the baseline row comes first
ROWS = [
    ("nnUNetTrainer", "nnUNetPlans"),
    ("nnFMTrainer", "nnUNetPlans"),          # same patch and batch as the baseline
    ("nnFMTrainer", "nnFMPlans_anatomix"),   # what the nnFM planner chose
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, iterations=10, device=default_device())
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        print_result(measure(args.dataset, "3d_fullres", *args.worker, args.iterations, args.warmup, args.device))
        return

    require_plans(args.dataset, ROWS, {"nnUNetPlans": f"nnUNetv2_plan_and_preprocess -d {args.dataset} -c 3d_fullres",
                                       "nnFMPlans_anatomix": f"nnFM_plan_and_preprocess -d {args.dataset}"})
    rows = measure_rows(__file__, ROWS, ["-d", args.dataset, "--iterations", str(args.iterations),
                                         "--warmup", str(args.warmup), "--device", args.device])
    add_ratios(rows)
    print(f"\n{'trainer':<16}{'plans':<20}{'patch':<16}{'bs':>3}{'s/it':>9}{'peak MB':>10}"
          f"{'s/it ratio':>12}{'mem ratio':>11}")
    for r in rows:
        print(f"{r['trainer']:<16}{r['plans']:<20}{'x'.join(map(str, r['patch_size'])):<16}{r['batch_size']:>3}"
              f"{r['s_per_iteration']:>9.3f}{r['peak_memory_bytes'] / 2**20:>10.0f}"
              f"{r['s_per_iteration_ratio']:>12.2f}{r['peak_memory_ratio']:>11.2f}")
    write_rows(rows, args.output)


if __name__ == "__main__":
    main()
