"""The paper's detection augmentations on full-depth tiles, boxes moving with the image.

Each takes an ``(H, W)`` or ``(H, W, C)`` integer image (``uint16`` or ``uint8``), ``(N, 4)`` xyxy boxes in
the same frame and a NumPy generator, and returns ``(image, boxes)`` with the image's
dtype unchanged. :class:`BoxAugment` applies the enabled ones, each with probability ``p``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from pulmo.data.xray_image import full_scale

AUGMENTATIONS = ("hflip", "blur", "brightness_contrast", "noise")


def hflip(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: ``x -> W - x`` for both box edges."""
    w = image.shape[1]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = w - b[:, [2, 0]]
    return image[:, ::-1].copy(), b


def gaussian_blur(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                  sigma_px: tuple[float, float] = (0.5, 1.5)) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blur with a random sigma (pixels); boxes unchanged."""
    sigma = float(rng.uniform(*sigma_px))
    out = gaussian_filter(image.astype(np.float32), sigma=(sigma, sigma, 0)[: image.ndim])
    return np.clip(np.rint(out), 0, full_scale(image.dtype)).astype(image.dtype), boxes


def brightness_contrast(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                        brightness: float = 0.2, contrast: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``x * alpha + beta * full_scale`` with alpha in 1 +- contrast, beta in +- brightness
    (albumentations' RandomBrightnessContrast, in the image's own units)."""
    alpha = float(rng.uniform(1 - contrast, 1 + contrast))
    beta = float(rng.uniform(-brightness, brightness)) * full_scale(image.dtype)
    out = image.astype(np.float32) * alpha + beta
    return np.clip(np.rint(out), 0, full_scale(image.dtype)).astype(image.dtype), boxes


def gaussian_noise(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                   std_fraction: tuple[float, float] = (0.01, 0.04)) -> tuple[np.ndarray, np.ndarray]:
    """Additive Gaussian noise, standard deviation a random fraction of full scale."""
    std = float(rng.uniform(*std_fraction)) * full_scale(image.dtype)
    out = image.astype(np.float32) + rng.normal(0.0, std, size=image.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, full_scale(image.dtype)).astype(image.dtype), boxes


_FUNCS = {"hflip": hflip, "blur": gaussian_blur, "brightness_contrast": brightness_contrast, "noise": gaussian_noise}


@dataclass(frozen=True)
class BoxAugment:
    """The enabled augmentations (names from :data:`AUGMENTATIONS`), each with probability ``p``."""

    names: tuple[str, ...] = ()
    p: float = 0.5

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in _FUNCS]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; known: {list(AUGMENTATIONS)}")

    def __call__(self, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        for name in self.names:
            if rng.random() < self.p:
                image, boxes = _FUNCS[name](image, boxes, rng)
        return image, boxes
