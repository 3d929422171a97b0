"""Planner memory estimate vs measured peak memory of real training steps.

CPU: fp32 estimate (4 bytes per saved activation) vs peak resident memory of a fresh process.
GPU (--device cuda): mixed-precision estimate (2 bytes, what the planner uses) vs
torch.cuda.max_memory_allocated. Prints estimate / measured for each patch and batch size.

  python benchmarks/memory_estimate_check.py --device cpu
"""
import argparse

from nnfm.networks import AnatomixSegmentationNetwork
from nnfm.planning.measure import measure_in_subprocess
from nnfm.planning.memory import estimate_training_memory

CASES = [((48, 64, 48), 2), ((48, 64, 48), 4), ((64, 64, 64), 2), ((96, 96, 96), 2)]
GPU_CASES = CASES + [((128, 128, 128), 2), ((160, 160, 160), 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=3)
    args = parser.parse_args()
    bytes_per_activation = 2 if args.device.startswith("cuda") else 4
    spec = {"class": "nnfm.networks.AnatomixSegmentationNetwork", "kwargs": {"deep_supervision": True},
            "in_channels": 1, "num_classes": args.classes}
    print(f"{'patch':<14}{'bs':>3}{'estimate MB':>13}{'measured MB':>13}{'ratio':>8}")
    ratios = []
    for patch, batch in (GPU_CASES if args.device.startswith("cuda") else CASES):
        estimate = estimate_training_memory(lambda: AnatomixSegmentationNetwork(1, args.classes, True), 1, patch,
                                            bytes_per_activation).total_bytes(batch)
        measured = measure_in_subprocess(spec, patch, batch, args.device)
        ratios.append(estimate / measured)
        print(f"{'x'.join(map(str, patch)):<14}{batch:>3}{estimate / 2**20:>13.0f}{measured / 2**20:>13.0f}"
              f"{ratios[-1]:>8.2f}")
    print(f"estimate/measured: min {min(ratios):.2f}, max {max(ratios):.2f} on {args.device}")


if __name__ == "__main__":
    main()
