"""Loss curve of a pretraining run: raw per-step loss and a moving average, as PNG and CSV."""
from pathlib import Path
from typing import Sequence

import numpy as np


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    window = max(1, min(window, len(values)))
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    head = cumulative[1:window] / np.arange(1, window)          # shorter windows at the start
    return np.concatenate([head, (cumulative[window:] - cumulative[:-window]) / window])


def write_loss_curve(out_dir, losses: Sequence[float], name: str = "loss_curve.png",
                     ylabel: str = "voxel SupCon loss") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    steps = np.arange(1, len(losses) + 1)
    smooth = moving_average(losses, max(1, len(losses) // 50))
    with open(out_dir / "loss.csv", "w") as handle:
        handle.write("step,loss\n" + "".join(f"{s},{l:.6f}\n" for s, l in zip(steps, losses)))
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(steps, losses, alpha=0.3, label="per step")
    axis.plot(steps, smooth, label="moving average")
    axis.set_xlabel("step"); axis.set_ylabel(ylabel); axis.legend()
    figure.tight_layout()
    figure.savefig(out_dir / name, dpi=100)
    plt.close(figure)
    return out_dir / name
