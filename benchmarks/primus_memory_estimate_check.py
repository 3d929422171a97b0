"""Primus planner memory estimate (both attention models) vs measured peak of real training steps.

CPU: fp32 estimate (4 bytes per saved activation) vs the peak resident memory of a fresh process
running SGD steps (nnfm.planning.measure; SGD keeps 3 fp32 copies per parameter, so the estimate
here counts 3 as well). PyTorch's CPU attention is a fused (flash) kernel, so "fused" should track
the measurement and "math" should overshoot by the N x N term as tokens grow.

  python benchmarks/primus_memory_estimate_check.py --device cpu
"""
import argparse
from dataclasses import replace

import torch

from nnfm.networks.primus_segmentation import PRIMUS_PRESETS, PrimusSegmentationNetwork
from nnfm.planning.vit_memory import estimate_vit_training_memory
from nnfm.planning.measure import measure_in_subprocess

CASES = [((64, 64, 64), 2), ((96, 96, 96), 2), ((128, 128, 128), 1)]


def sgd_estimate(patch, batch, backend: str, bytes_per_activation: int, classes: int, preset: str) -> int:
    def build():
        with torch.device("meta"):
            return PrimusSegmentationNetwork(1, classes, False, input_shape=list(patch), **PRIMUS_PRESETS[preset])
    vit = estimate_vit_training_memory(build, 1, patch, bytes_per_activation, backend, patch=8)
    return replace(vit, optimizer_states=1).total_bytes(batch)  # measured with SGD (momentum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--preset", default="primus_tiny", choices=sorted(PRIMUS_PRESETS))
    args = parser.parse_args()
    bytes_per_activation = 2 if args.device.startswith("cuda") else 4
    print(f"{'patch':<13}{'tokens':>7}{'bs':>3}{'fused MB':>10}{'math MB':>10}{'measured MB':>13}"
          f"{'fused/meas':>12}{'math/meas':>11}")
    for patch, batch in CASES:
        spec = {"class": "nnfm.networks.primus_segmentation.PrimusSegmentationNetwork",
                "kwargs": dict(PRIMUS_PRESETS[args.preset], input_shape=list(patch)), "in_channels": 1,
                "num_classes": args.classes}
        fused, math = (sgd_estimate(patch, batch, b, bytes_per_activation, args.classes, args.preset)
                       for b in ("fused", "math"))
        measured = measure_in_subprocess(spec, patch, batch, args.device)
        tokens = (patch[0] // 8) * (patch[1] // 8) * (patch[2] // 8)
        print(f"{'x'.join(map(str, patch)):<13}{tokens:>7}{batch:>3}{fused / 2**20:>10.0f}{math / 2**20:>10.0f}"
              f"{measured / 2**20:>13.0f}{fused / measured:>12.2f}{math / measured:>11.2f}")


if __name__ == "__main__":
    main()
