"""Synthetic pair engine: determinism, view alignment, label-folder mixing, preview (CPU, 32^3)."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nnfm.pretraining.synth import SynthConfig, SyntheticPairDataset, SyntheticPairGenerator
from nnfm.pretraining.synth.appearance import AppearanceConfig, render_view
from nnfm.pretraining.synth.benchmark import workers_needed
from nnfm.pretraining.synth.engine import worker_init
from nnfm.pretraining.synth.labels import random_label_ensemble
from nnfm.pretraining.synth.spatial import random_sampling_grid, warp_image, warp_labels

SIZE = 32


def clean_appearance() -> AppearanceConfig:
    """Per-label intensities only: no texture, bias, blur, artifacts or noise."""
    return AppearanceConfig(label_std=(0.0, 0.0), texture_prob=0, bias_prob=0, blur_prob=0, lowres_prob=0,
                            gibbs_prob=0, spike_prob=0, noise_prob=0, gamma_log_std=0.0)


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        differs = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= differs
        edge[tuple(hi)] |= differs
    return edge


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    return np.sqrt(sum(g ** 2 for g in np.gradient(image)))


def test_sample_format():
    sample = SyntheticPairGenerator(seed=0, size=SIZE).sample(0)
    assert sample["view1"].shape == sample["view2"].shape == (1, SIZE, SIZE, SIZE)
    assert sample["labels"].shape == (SIZE, SIZE, SIZE) and sample["labels"].dtype == torch.int64
    for view in ("view1", "view2"):
        assert sample[view].dtype == torch.float32
        assert 0.0 <= float(sample[view].min()) and float(sample[view].max()) <= 1.0
    assert len(torch.unique(sample["labels"])) >= 3


def test_same_seed_same_sample_different_seed_different():
    a = SyntheticPairGenerator(seed=7, size=SIZE).sample(3)
    b = SyntheticPairGenerator(seed=7, size=SIZE).sample(3)
    c = SyntheticPairGenerator(seed=8, size=SIZE).sample(3)
    d = SyntheticPairGenerator(seed=7, size=SIZE).sample(4)
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert not torch.equal(a[key], c[key]), key
        assert not torch.equal(a[key], d[key]), key


def test_stream_independent_of_worker_count_and_ranks_disjoint():
    generator = SyntheticPairGenerator(seed=1, size=SIZE)
    dataset = SyntheticPairDataset(generator, batch_size=2, first_batch=1, num_batches=3)
    serial = list(DataLoader(dataset, batch_size=2, num_workers=0))
    parallel = list(DataLoader(dataset, batch_size=2, num_workers=2, worker_init_fn=worker_init))
    assert len(serial) == len(parallel) == 3
    for s, p in zip(serial, parallel):
        assert torch.equal(s["view1"], p["view1"]) and torch.equal(s["labels"], p["labels"])
    # resuming at batch 1 reproduces batch 1 of a stream that started at 0
    full = SyntheticPairDataset(generator, batch_size=2, first_batch=0, num_batches=2)
    assert torch.equal(list(DataLoader(full, batch_size=2))[1]["view2"], serial[0]["view2"])
    # two DDP ranks never draw the same sample index
    ranks = [SyntheticPairDataset(generator, 2, rank=r, world_size=2) for r in range(2)]
    indices = [{d.sample_index(j, b) for j in range(50) for b in range(2)} for d in ranks]
    assert not indices[0] & indices[1]


def test_views_share_labels_and_are_homogeneous_within_labels():
    generator = SyntheticPairGenerator(SynthConfig(appearance=clean_appearance()), seed=2, size=SIZE)
    sample = generator.sample(0)
    labels = sample["labels"].numpy()
    for view in ("view1", "view2"):
        image = sample[view][0].numpy()
        for label in np.unique(labels):
            inside = image[labels == label]
            # one intensity per label (gamma-free, noise-free rendering); min-max scaling keeps it constant
            assert inside.std() < 1e-4, (view, label, inside.std())
    # the two views draw their contrasts independently
    assert not np.allclose(sample["view1"].numpy(), sample["view2"].numpy())


def test_default_appearance_is_mostly_explained_by_labels():
    """Correlation ratio: share of intensity variance explained by the label map, default corruptions on."""
    generator = SyntheticPairGenerator(seed=3, size=SIZE)
    ratios = []
    for index in range(4):
        sample = generator.sample(index)
        labels = sample["labels"].numpy().ravel()
        for view in ("view1", "view2"):
            image = sample[view][0].numpy().ravel().astype(np.float64)
            means = np.bincount(labels, image) / np.maximum(np.bincount(labels), 1)
            ratios.append(1 - ((image - means[labels]) ** 2).sum() / ((image - image.mean()) ** 2).sum())
    assert np.mean(ratios) > 0.5, ratios


def test_edges_of_both_views_follow_the_shared_warped_labels():
    generator = SyntheticPairGenerator(SynthConfig(appearance=clean_appearance()), seed=4, size=SIZE)
    for index in range(3):
        sample = generator.sample(index)
        labels = sample["labels"].numpy()
        edge = boundary_mask(labels)
        for view in ("view1", "view2"):
            gradient = gradient_magnitude(sample[view][0].numpy())
            # central differences reach one voxel: dilate the edge mask by one voxel for "interior"
            interior = ~boundary_mask(edge.astype(np.int16)) & ~edge
            assert gradient[interior].max() < 1e-4
            assert gradient[edge].mean() > 0.02


def test_shared_spatial_transform_moves_labels_and_images_together():
    rng = np.random.default_rng(5)
    labels = random_label_ensemble(rng, (SIZE,) * 3)
    image = render_view(np.random.default_rng(6), labels, clean_appearance(), num_ids=25)
    grid = random_sampling_grid(np.random.default_rng(7), labels.shape)
    assert grid is not None
    warped_labels = warp_labels(labels, grid)
    assert (warped_labels != labels).mean() > 0.05          # the transform did move things
    # warping the rendered image gives the rendering of the warped labels, except at blended edges
    warped_image = warp_image(image, grid)
    lut = np.zeros(26, dtype=np.float32)
    for label in np.unique(labels):
        lut[label] = image[labels == label][0]
    lut[0] = image[labels == 0][0] if (labels == 0).any() else 0.0
    inside = warp_image(np.ones_like(image), grid) > 0.999   # voxels that map inside the source volume
    edge = boundary_mask(warped_labels)
    away_from_edges = inside & ~edge & ~boundary_mask(edge.astype(np.int16))
    agree = np.abs(warped_image - lut[warped_labels]) < 1e-3
    assert away_from_edges.sum() > 1000
    assert agree[away_from_edges].mean() > 0.95


def test_labels_dir_is_mixed_in(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    for case in range(2):
        array = np.zeros((20, 40, 30), dtype=np.uint8)
        array[5:15, 10:30, 8:22] = 1
        array[8:12, 15:25, 12:18] = 2 + case
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 2.5))
        sitk.WriteImage(image, str(tmp_path / f"case_{case:03d}.nii.gz"))
    generator = SyntheticPairGenerator(SynthConfig(labels_dir=str(tmp_path), real_label_prob=1.0), seed=0, size=SIZE)
    labels = generator.sample(0)["labels"]
    assert labels.shape == (SIZE,) * 3
    ids = torch.unique(labels).tolist()
    assert ids[0] == 0 and len(ids) == 3 and max(ids) <= generator.config.labels.max_labels


def test_preview_png(tmp_path):
    from nnfm.pretraining.synth.preview import write_preview_png
    path = write_preview_png(tmp_path / "preview.png", n=2, size=SIZE)
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_workers_needed():
    # 2 samples per 0.5 s step = 4 samples/s; at 1.5 samples/s per worker -> 3 workers
    assert workers_needed(1.5, 2, 0.5) == 3
