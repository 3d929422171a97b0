"""Multi-crop views of one grey-value slice (2 global + N local), for nnU-Net-normalised intensities.

DINO's colour jitter, greyscale and solarisation have no meaning for one-channel medical slices; they
are replaced by intensity transforms that keep anatomy plausible: contrast/brightness, gamma,
Gaussian blur (DINO's blur schedule: global view 1 always, view 2 rarely, local views half the time)
and Gaussian noise. Horizontal flips as DINO. Everything is drawn from the given generator.
"""
import math
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class CropSettings:
    global_size: int = 224
    local_size: int = 96
    n_local: int = 8
    global_scale: Tuple[float, float] = (0.32, 1.0)
    local_scale: Tuple[float, float] = (0.05, 0.32)


def random_resized_crop(image: torch.Tensor, size: int, scale: Tuple[float, float], rng: np.random.Generator,
                        ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """[H, W] -> [1, size, size]: a random region of ``scale`` x area, resized (torchvision's rule)."""
    height, width = image.shape
    area = height * width
    crop_h, crop_w, top, left = height, width, 0, 0
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            crop_h, crop_w = h, w
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            break
    crop = image[top:top + crop_h, left:left + crop_w][None, None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=crop_h > size or crop_w > size)[0]


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    padded = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[0]


def intensity_augment(image: torch.Tensor, rng: np.random.Generator, blur_probability: float) -> torch.Tensor:
    if rng.random() < 0.5:
        image = image.flip(-1)
    if rng.random() < 0.8:                                           # contrast / brightness
        mean = image.mean()
        image = (image - mean) * rng.uniform(0.6, 1.4) + mean + rng.uniform(-0.3, 0.3) * (image.std() + 1e-6)
    if rng.random() < 0.3:                                           # gamma on the crop's own range
        low, high = image.min(), image.max()
        span = (high - low).clamp(min=1e-6)
        image = ((image - low) / span) ** rng.uniform(0.7, 1.5) * span + low
    if rng.random() < blur_probability:
        image = _gaussian_blur(image, rng.uniform(0.1, 1.5))
    if rng.random() < 0.2:
        image = image + torch.from_numpy(rng.normal(0, rng.uniform(0, 0.1), image.shape).astype(np.float32))
    return image


def multi_crop(image: torch.Tensor, settings: CropSettings, rng: np.random.Generator) -> Dict[str, torch.Tensor]:
    """[H, W] float slice -> {'global': [2, 1, G, G], 'local': [N, 1, L, L]}."""
    globals_ = [intensity_augment(random_resized_crop(image, settings.global_size, settings.global_scale, rng), rng,
                                  blur_probability=p) for p in (1.0, 0.1)]
    locals_ = [intensity_augment(random_resized_crop(image, settings.local_size, settings.local_scale, rng), rng,
                                 blur_probability=0.5) for _ in range(settings.n_local)]
    local = torch.stack(locals_) if locals_ else torch.zeros(0, 1, settings.local_size, settings.local_size)
    return {"global": torch.stack(globals_), "local": local}
