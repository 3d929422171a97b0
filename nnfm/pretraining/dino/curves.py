"""Loss curves of a DINO run: the total (shared ``write_loss_curve``) and one panel per loss term."""
from pathlib import Path
from typing import Dict, List

import numpy as np

from nnfm.pretraining.loss_curve import moving_average, write_loss_curve


def write_dino_curves(out_dir, history: Dict[str, List[float]]) -> Dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    total = write_loss_curve(out_dir, history["total"], ylabel="DINO + iBOT + KoLeo (+ Gram) loss")
    names = [k for k in ("dino", "ibot", "koleo", "gram") if history.get(k)]
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for axis, name in zip(axes[0], names):
        values = history[name]
        steps = np.arange(1, len(values) + 1)
        axis.plot(steps, values, alpha=0.3)
        axis.plot(steps, moving_average(values, max(1, len(values) // 50)))
        axis.set_title(name); axis.set_xlabel("step")
    figure.tight_layout()
    figure.savefig(out_dir / "loss_components.png", dpi=100)
    plt.close(figure)
    with open(out_dir / "loss_components.csv", "w") as handle:
        handle.write("step," + ",".join(names) + "\n")
        for i in range(len(history["total"])):
            handle.write(f"{i + 1}," + ",".join(f"{history[n][i]:.6f}" for n in names) + "\n")
    return {"total": total, "components": out_dir / "loss_components.png"}
