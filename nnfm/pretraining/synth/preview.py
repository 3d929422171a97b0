"""A PNG grid of samples (view 1 / view 2 / labels, middle slices) to eyeball the engine."""
from pathlib import Path
from typing import Optional


from nnfm.pretraining.synth.engine import SyntheticPairGenerator


def write_preview_png(path, n: int = 4, generator: Optional[SyntheticPairGenerator] = None, seed: int = 0,
                      size: int = 96, first_index: int = 0) -> Path:
    """Rows = samples; columns = view 1, view 2, labels on the middle axial slice, then the same on the middle coronal slice."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    generator = generator or SyntheticPairGenerator(seed=seed, size=size)
    figure, axes = plt.subplots(n, 6, figsize=(12, 2.1 * n), squeeze=False)
    max_id = generator.config.labels.max_labels
    for row in range(n):
        sample = generator.sample(first_index + row)
        volumes = (sample["view1"][0].numpy(), sample["view2"][0].numpy(), sample["labels"].numpy())
        for plane in range(2):
            for column, volume in enumerate(volumes):
                middle = volume.shape[plane] // 2
                image = volume[middle] if plane == 0 else volume[:, middle]
                ax = axes[row, plane * 3 + column]
                if column == 2:
                    ax.imshow(image, cmap="tab20", vmin=0, vmax=max_id, interpolation="nearest")
                else:
                    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([]); ax.set_yticks([])
                if row == 0:
                    ax.set_title(("view 1", "view 2", "labels")[column] + (" (axial)" if plane == 0 else " (coronal)"),
                                 fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
