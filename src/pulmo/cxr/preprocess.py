"""Grayscale X-ray -> model input: optional lung-field crop, contrast, resize, normalise."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pulmo.cxr.config import IMAGENET_MEAN, IMAGENET_STD, ImageConfig


def to_uint8(gray: np.ndarray) -> np.ndarray:
    """``(H, W)`` float in ``[0, 1]`` -> uint8 0-255."""
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


def lung_box(gray: np.ndarray, margin: float = 0.05, min_area: float = 0.12) -> tuple[int, int, int, int]:
    """Bounding box ``(x0, y0, x1, y1)`` in pixels around the two lung fields.

    A heuristic, not a segmentation model: on a 256-px copy, smooth, threshold at Otsu's level
    to find dark (air-filled) regions, and take the largest dark region whose centre lies in
    the left half (x 10-50 %, y 20-80 %) and the largest in the right half (regions spanning
    the whole image, the air around the body, are skipped); their joint box,
    padded by ``margin`` of the image size, is returned. When either side has no such region
    (area >= 2 % of the image), or the box covers less than ``min_area`` of the image, the
    whole image is returned.
    """
    h, w = gray.shape
    small = cv2.resize(to_uint8(gray), (256, 256), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (7, 7), 0)
    _, dark = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, _, stats, centroids = cv2.connectedComponentsWithStats(dark, connectivity=8)
    sides: dict[str, tuple[int, int]] = {}
    for k in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[k])
        cx, cy = centroids[k] / 256
        if area < 0.02 * 256 * 256 or not 0.2 <= cy <= 0.8 or not 0.1 <= cx <= 0.9:
            continue
        if bw >= 250 or bh >= 250:  # spans the image: the air around the body, not a lung
            continue
        side = "left" if cx < 0.5 else "right"
        if area > sides.get(side, (0, -1))[0]:
            sides[side] = (area, k)
    if len(sides) < 2:
        return 0, 0, w, h
    keep = [k for _, k in sides.values()]
    x0 = min(stats[k][0] for k in keep)
    y0 = min(stats[k][1] for k in keep)
    x1 = max(stats[k][0] + stats[k][2] for k in keep)
    y1 = max(stats[k][1] + stats[k][3] for k in keep)
    m = margin * 256
    x0, y0, x1, y1 = max(0, x0 - m), max(0, y0 - m), min(256, x1 + m), min(256, y1 + m)
    if (x1 - x0) * (y1 - y0) < min_area * 256 * 256:
        return 0, 0, w, h
    sx, sy = w / 256, h / 256
    return int(x0 * sx), int(y0 * sy), int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy))


def apply_contrast(gray: np.ndarray, mode: str) -> np.ndarray:
    """``minmax``: 1st-99th percentile stretch; ``equalize``: histogram equalisation;
    ``clahe``: CLAHE (clip 2.0, 8x8 tiles). In and out: ``(H, W)`` float in ``[0, 1]``."""
    if mode == "minmax":
        lo, hi = np.percentile(gray, [1, 99])
        return np.clip((gray - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(gray)
    u8 = to_uint8(gray)
    out = cv2.equalizeHist(u8) if mode == "equalize" else cv2.createCLAHE(2.0, (8, 8)).apply(u8)
    return out.astype(np.float32) / 255.0


def prepare_gray(gray: np.ndarray, cfg: ImageConfig) -> np.ndarray:
    """Crop (optional), contrast and resize: ``(H, W)`` -> ``(size_px, size_px)`` float32 in [0, 1]."""
    if cfg.lung_crop:
        x0, y0, x1, y1 = lung_box(gray)
        gray = gray[y0:y1, x0:x1]
    gray = apply_contrast(gray.astype(np.float32), cfg.contrast)
    interp = cv2.INTER_AREA if min(gray.shape) > cfg.size_px else cv2.INTER_LINEAR
    return cv2.resize(gray, (cfg.size_px, cfg.size_px), interpolation=interp).astype(np.float32)


def normalize_tensor(x: torch.Tensor, cfg: ImageConfig) -> torch.Tensor:
    """``(B, 1, H, W)`` in [0, 1] -> ``(B, channels, H, W)`` normalised as ``cfg.normalize`` says."""
    if cfg.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if cfg.normalize == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN[: cfg.channels] if cfg.channels == 3 else IMAGENET_MEAN[:1]).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD[: cfg.channels] if cfg.channels == 3 else IMAGENET_STD[:1]).view(1, -1, 1, 1)
        return (x - mean) / std
    return (x - 0.5) / 0.5


def to_input(gray: np.ndarray, cfg: ImageConfig) -> torch.Tensor:
    """One image ready for the model: ``(H, W)`` -> ``(1, channels, size_px, size_px)``."""
    x = torch.from_numpy(prepare_gray(gray, cfg))[None, None]
    return normalize_tensor(x, cfg)
