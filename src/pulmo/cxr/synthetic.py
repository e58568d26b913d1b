"""Synthetic chest-X-ray-like images for tests and the demo (not medical data).

A bright body ellipse on a dark background, two dark lung fields, rib arcs and noise, with
a random rotation, scale, shift and gamma per image.
Class cues: ``Covid`` adds patchy bright opacities in the lower, outer lung zones;
``Viral Pneumonia`` adds a diffuse haze over one lung; ``Normal`` adds nothing
(:func:`synth_xray`, the demo image). :func:`chest_phantom` is one fixed film-like layout with a
heart shadow, which the chest X-ray gate accepts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pulmo.cxr.preprocess import to_uint8


def synth_xray(label: str, size_px: int, rng: np.random.Generator, pose: bool = True) -> np.ndarray:
    """One ``(size_px, size_px)`` float32 image in [0, 1]; ``pose=False``: no random rotation,
    scale, shift or gamma (the anatomy stays where the module docstring says)."""
    s = size_px
    img = np.zeros((s, s), np.float32)
    cv2.ellipse(img, (s // 2, int(s * 0.55)), (int(s * 0.42), int(s * 0.5)), 0, 0, 360, 0.75, -1)
    lungs = np.zeros_like(img)
    for cx in (0.33, 0.67):
        cx_px = int(s * (cx + rng.uniform(-0.02, 0.02)))
        cv2.ellipse(lungs, (cx_px, int(s * 0.5)), (int(s * 0.13), int(s * 0.27)), 0, 0, 360, 1.0, -1)
    img -= 0.5 * lungs
    ribs = np.zeros_like(img)
    for k in range(6):
        y = int(s * (0.3 + 0.08 * k))
        cv2.ellipse(ribs, (s // 2, y), (int(s * 0.3), int(s * 0.05)), 0, 180, 360, 0.12, max(1, s // 128))
    img += ribs
    if label == "Covid":
        for _ in range(5):
            side = rng.choice([0.22, 0.78])
            c = (int(s * (side + rng.uniform(-0.04, 0.04))), int(s * rng.uniform(0.55, 0.7)))
            cv2.circle(img, c, int(s * rng.uniform(0.03, 0.06)), 0.7, -1)
    elif label == "Viral Pneumonia":
        haze = np.zeros_like(img)
        cv2.ellipse(haze, (int(s * rng.choice([0.33, 0.67])), int(s * 0.5)), (int(s * 0.12), int(s * 0.25)), 0, 0, 360, 0.3, -1)
        img += cv2.GaussianBlur(haze, (0, 0), s / 40)
    # pose and exposure differ from image to image (so that unrelated images hash apart)
    if pose:
        rot = cv2.getRotationMatrix2D((s / 2, s / 2), rng.uniform(-12, 12), rng.uniform(0.8, 1.1))
        rot[:, 2] += rng.uniform(-0.1, 0.1, 2) * s
        img = cv2.warpAffine(img, rot, (s, s), borderValue=0.0)
        img = np.clip(img, 0, 1) ** rng.uniform(0.6, 1.6)
    img = cv2.GaussianBlur(img, (0, 0), s / 256 + 0.5)
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def chest_phantom(size: int = 256, seed: int = 0) -> np.ndarray:
    """A frontal chest X-ray phantom ``(size, size)`` in [0, 1] (not medical data): dark air around
    a bright body, two dark lung fields either side of a bright mediastinum and spine, the heart
    shadow over the lower left lung (the image's right), bright abdomen below. Passes the bundled
    chest X-ray gate (its layout is a chest film's; without the heart it would be its own mirror
    image and refused). Tests and benchmarks use it where a chest X-ray must reach the model."""
    from scipy.ndimage import gaussian_filter

    y, x = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 0.08)
    body = ((x - 0.5) / 0.46) ** 2 + ((y - 0.62) / 0.62) ** 2 < 1
    img[body] = 0.75
    for cx in (0.3, 0.7):
        img[((x - cx) / 0.15) ** 2 + ((y - 0.45) / 0.3) ** 2 < 1] = 0.25
    img[(np.abs(x - 0.5) < 0.07) & (y > 0.1)] = 0.85
    img[((x - 0.6) / 0.13) ** 2 + ((y - 0.62) / 0.12) ** 2 < 1] = 0.7
    img[(y > 0.8) & body] = 0.8
    img = gaussian_filter(img, size / 40) + 0.02 * np.random.default_rng(seed).standard_normal((size, size))
    return np.clip(img, 0, 1)


def chest_phantom_image(size: int = 256, seed: int = 0) -> Image.Image:
    """:func:`chest_phantom` as an 8-bit gray PIL image, ``size`` x ``size`` px."""
    return Image.fromarray(to_uint8(chest_phantom(size, seed)), "L")


def write_xray_folder(root: str | Path, classes: tuple[str, ...] = ("Covid", "Normal", "Viral Pneumonia"),
                      per_class: int = 4, size_px: int = 96, splits: tuple[str, ...] = (), seed: int = 0) -> Path:
    """Write PNGs as ``root/[split/]<class>/<i>.png``; returns ``root``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split in splits or ("",):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(to_uint8(synth_xray(label, size_px, rng))).save(folder / f"{i:03d}.png")
    return root
