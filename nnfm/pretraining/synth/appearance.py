"""Per-view appearance: turns a label map into one random "scan" of it.

Every view draws its own intensities and corruptions, so two views of the same label map look
like two different modalities/scanners imaging the same anatomy. Order follows the physics
loosely: tissue contrast -> texture -> bias field -> acquisition (blur, low resolution,
k-space artifacts) -> noise -> display (normalisation, gamma).
"""
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from nnfm.pretraining.synth.fields import fine_noise, smooth_field


@dataclass
class AppearanceConfig:
    background_dark_prob: float = 0.5          # background near 0, as air in CT / outside the body in MRI
    label_std: Tuple[float, float] = (0.0, 0.12)    # within-label intensity spread (tissue grain)
    grain_sigma: Tuple[float, float] = (0.5, 1.5)
    texture_prob: float = 0.5                  # multiplicative smooth texture
    texture_amplitude: Tuple[float, float] = (0.05, 0.25)
    bias_prob: float = 0.8
    bias_strength: Tuple[float, float] = (0.1, 0.5)   # std of the log bias field
    blur_prob: float = 0.5
    blur_sigma: Tuple[float, float] = (0.3, 1.5)      # voxels, drawn per axis
    lowres_prob: float = 0.3
    lowres_factor: Tuple[float, float] = (1.5, 4.0)   # thick slices along one random axis
    gibbs_prob: float = 0.2
    gibbs_keep: Tuple[float, float] = (0.4, 0.8)      # fraction of k-space kept along one axis
    spike_prob: float = 0.1
    spike_strength: Tuple[float, float] = (0.02, 0.15)
    noise_prob: float = 0.8
    noise_std: Tuple[float, float] = (0.005, 0.06)
    gamma_log_std: float = 0.35


def _minmax(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def _tissue_contrast(rng, labels, config: AppearanceConfig, num_ids: int) -> np.ndarray:
    means = rng.uniform(0.0, 1.0, num_ids).astype(np.float32)
    if rng.random() < config.background_dark_prob:
        means[0] = rng.uniform(0.0, 0.05)
    stds = rng.uniform(*config.label_std, num_ids).astype(np.float32)
    grain = fine_noise(rng, labels.shape, rng.uniform(*config.grain_sigma))
    return means[labels] + stds[labels] * grain


def _low_resolution(rng, image: np.ndarray, config: AppearanceConfig) -> np.ndarray:
    axis = int(rng.integers(3))
    factor = rng.uniform(*config.lowres_factor)
    sigma = [0.0, 0.0, 0.0]
    sigma[axis] = factor / 2.355              # slice profile ~ FWHM of one thick slice
    thick = gaussian_filter(image, sigma, mode="nearest")
    low_shape = list(image.shape)
    low_shape[axis] = max(2, int(round(image.shape[axis] / factor)))
    tensor = torch.from_numpy(thick)[None, None]
    low = F.interpolate(tensor, size=low_shape, mode="nearest")
    return F.interpolate(low, size=image.shape, mode="trilinear", align_corners=False)[0, 0].numpy()


def _kspace_artifacts(rng, image: np.ndarray, gibbs: bool, spikes: bool, config: AppearanceConfig) -> np.ndarray:
    """Gibbs ringing (truncated k-space along one axis) and/or spikes (bright k-space points)."""
    kspace = np.fft.fftshift(np.fft.fftn(image))
    if gibbs:
        axis = int(rng.integers(3))
        n = image.shape[axis]
        keep = max(2, int(round(n * rng.uniform(*config.gibbs_keep))))
        mask_shape = [1, 1, 1]
        mask_shape[axis] = n
        low = (n - keep) // 2
        mask = np.zeros(n, dtype=np.float32)
        mask[low:low + keep] = 1
        kspace = kspace * mask.reshape(mask_shape)
    if spikes:
        peak = np.abs(kspace).max()
        for _ in range(int(rng.integers(1, 4))):
            where = tuple(int(rng.integers(s)) for s in image.shape)
            kspace[where] += peak * rng.uniform(*config.spike_strength) * np.exp(1j * rng.uniform(0, 2 * np.pi))
    return np.abs(np.fft.ifftn(np.fft.ifftshift(kspace))).astype(np.float32)


def render_view(rng: np.random.Generator, labels: np.ndarray, config: AppearanceConfig = None,
                num_ids: int = None) -> np.ndarray:
    """One random appearance of ``labels`` (int array, ids < num_ids): float32 in [0, 1]."""
    config = config or AppearanceConfig()
    labels = labels.astype(np.int64, copy=False)
    num_ids = num_ids or int(labels.max()) + 1
    shape = labels.shape
    image = _tissue_contrast(rng, labels, config, num_ids)
    if rng.random() < config.texture_prob:
        texture = smooth_field(rng, shape, rng.uniform(3, 12))
        image = image * (1 + rng.uniform(*config.texture_amplitude) * texture)
    image = _minmax(image)
    if rng.random() < config.bias_prob:
        bias = smooth_field(rng, shape, rng.uniform(0.5, 1.0) * max(shape))
        image = image * np.exp(rng.uniform(*config.bias_strength) * bias)
    if rng.random() < config.blur_prob:
        image = gaussian_filter(image, rng.uniform(*config.blur_sigma, 3), mode="nearest")
    if rng.random() < config.lowres_prob:
        image = _low_resolution(rng, image, config)
    gibbs, spikes = rng.random() < config.gibbs_prob, rng.random() < config.spike_prob
    if gibbs or spikes:
        image = _kspace_artifacts(rng, image, gibbs, spikes, config)
    image = _minmax(image)
    if rng.random() < config.noise_prob:
        image = image + rng.uniform(*config.noise_std) * rng.standard_normal(shape).astype(np.float32)
    # robust upper end: a k-space spike or a hot bias-field corner must not darken the whole view
    low, high = float(image.min()), float(np.quantile(image, 0.998))
    image = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
    gamma = float(np.exp(rng.normal(0.0, config.gamma_log_std)))
    return (image ** gamma).astype(np.float32)
