"""Augmentations of what differs between X-ray sources rather than between diseases.

Sources differ in resolution (and the blur of resizing), exposure, contrast and gamma,
borders and collimation, burnt-in text and markers ("L", "AP PORTABLE", dates), framing and
rotation. :func:`harmonize_view` draws one random view of an image with all of these varied,
so a head trained on such views cannot lean on any one of them. Works on the raw gray image
``(H, W)`` float32 in [0, 1], before :func:`pulmo.cxr.preprocess.prepare_gray`.
"""

from __future__ import annotations

import cv2
import numpy as np

_TEXT = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "ERECT", "12/03", "2020", "ICU", "1", "A")


def _resolution(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down- and up-sample: long side 80-400 px, then back to the original size."""
    h, w = g.shape
    side = int(rng.integers(80, 401))
    s = side / max(h, w)
    if s >= 1:
        return g
    small = cv2.resize(g, (max(8, int(w * s)), max(8, int(h * s))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _tone(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma 0.6-1.6, contrast x0.7-1.3 about the mean, brightness +-0.1."""
    g = np.power(np.clip(g, 0, 1), rng.uniform(0.6, 1.6))
    m = g.mean()
    return np.clip((g - m) * rng.uniform(0.7, 1.3) + m + rng.uniform(-0.1, 0.1), 0, 1)


def _border(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A black or white frame (collimation, scanner margins) of 0-10 % on each side."""
    h, w = g.shape
    out = g.copy()
    value = float(rng.choice([0.0, 1.0]))
    for side in range(4):
        k = int(rng.uniform(0, 0.10) * (h if side < 2 else w))
        if k == 0 or rng.random() < 0.5:
            continue
        if side == 0:
            out[:k] = value
        elif side == 1:
            out[h - k:] = value
        elif side == 2:
            out[:, :k] = value
        else:
            out[:, w - k:] = value
    return out


def _text(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three burnt-in labels, white or black, near the edges."""
    h, w = g.shape
    u8 = np.ascontiguousarray(np.clip(g * 255, 0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(1, 4))):
        scale = max(h, w) / 400 * rng.uniform(0.6, 1.6)
        x = int(rng.uniform(0.02, 0.7) * w)
        y = int(rng.choice([rng.uniform(0.05, 0.15), rng.uniform(0.85, 0.97)]) * h)
        colour = int(rng.choice([0, 255]))
        cv2.putText(u8, str(rng.choice(_TEXT)), (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                    max(1, int(2 * scale)), cv2.LINE_AA)
    return u8.astype(np.float32) / 255.0


def _geometry(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation +-10 degrees, then a random crop keeping 75-100 % of each side."""
    h, w = g.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-10, 10), 1.0)
    g = cv2.warpAffine(g, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    ch, cw = int(h * rng.uniform(0.75, 1.0)), int(w * rng.uniform(0.75, 1.0))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return g[y0:y0 + ch, x0:x0 + cw]


def harmonize_view(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random view of ``gray`` ``(H, W)`` in [0, 1]: geometry always, each of resolution,
    tone, border and text with probability 0.5 (text 0.4). Returns float32 ``(h, w)`` in [0, 1]."""
    g = np.asarray(gray, dtype=np.float32)
    if rng.random() < 0.5:
        g = _resolution(g, rng)
    if rng.random() < 0.5:
        g = _tone(g, rng)
    if rng.random() < 0.5:
        g = _border(g, rng)
    if rng.random() < 0.4:
        g = _text(g, rng)
    return np.clip(_geometry(g, rng), 0, 1).astype(np.float32)


__all__ = ["harmonize_view"]
