"""What an image holds, measured before any model sees it: colour, blankness, how much of it
carries content.

Measured on a reduced copy (long side at most ``THUMB_PX``), so a large scan costs little.
The thresholds that turn these measurements into refusals and routes live in
:mod:`pulmo.frontdoor.routing`.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pulmo.data.image_io import to_gray_float

THUMB_PX = 512
CONTENT_STEP = 0.05  # a pixel carries content when it differs from the background level by this much (gray 0-1)


@dataclass(frozen=True)
class ImageContent:
    """Measurements of one image (on the reduced copy).

    ``chroma``: mean over pixels of (max - min of R, G, B), 0 for gray, 0-1; ``colour_fraction``:
    share of pixels whose chroma exceeds 0.1; ``mean``, ``std``: gray level 0-1;
    ``content_fraction``: share of pixels differing from the most common gray level by more than
    ``CONTENT_STEP``; ``bright_fraction``: share of pixels brighter than 0.9 (baggage scans are
    mostly bright background).
    """

    width: int
    height: int
    chroma: float
    colour_fraction: float
    mean: float
    std: float
    content_fraction: float
    bright_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def thumbnail(path: str | Path) -> tuple[Image.Image, np.ndarray]:
    """``(rgb_thumb, gray)``: an RGB copy with the long side at most ``THUMB_PX`` (for colour) and
    the gray level ``(h, w)`` float32 in [0, 1] of the same copy (16-bit and float images keep
    their depth, scaled as :func:`pulmo.data.image_io.to_gray_float` does)."""
    from pulmo.cxr.dicom import is_dicom, read_dicom

    if is_dicom(path):  # gray as the chest model sees it (VOI applied, MONOCHROME1 inverted)
        full = read_dicom(path)
        small = Image.fromarray(full).resize(_fit((full.shape[1], full.shape[0])), Image.Resampling.BOX)
        g = np.asarray(small, dtype=np.float32)
        return Image.fromarray((np.clip(g, 0, 1) * 255).astype(np.uint8)).convert("RGB"), g
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            im.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a reduced scale
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                gray = to_gray_float(im)
                small = Image.fromarray(gray).resize(_fit(im.size), Image.Resampling.BOX)
                g = np.asarray(small, dtype=np.float32)
                rgb = Image.fromarray((np.clip(g, 0, 1) * 255).astype(np.uint8)).convert("RGB")
                return rgb, g
            rgba = im.convert("RGBA")
    rgba = rgba.resize(_fit(rgba.size), Image.Resampling.BOX)
    arr = np.asarray(rgba, dtype=np.float32) / 255.0
    rgb = arr[..., :3] * arr[..., 3:4]  # transparent pixels carry nothing, as to_gray_float composites them
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return Image.fromarray((rgb * 255).astype(np.uint8)), gray.astype(np.float32)


def _fit(size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    scale = min(1.0, THUMB_PX / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def measure_arrays(rgb: np.ndarray, gray: np.ndarray) -> ImageContent:
    """Measure an ``(h, w, 3)`` uint8 RGB copy and its ``(h, w)`` gray level in [0, 1]."""
    c = rgb.astype(np.int16)
    chroma = (c.max(axis=2) - c.min(axis=2)).astype(np.float32) / 255.0
    hist, edges = np.histogram(gray, bins=64, range=(0.0, 1.0))
    background = float(edges[int(hist.argmax())] + 0.5 / 64)
    return ImageContent(
        width=int(gray.shape[1]), height=int(gray.shape[0]), chroma=float(chroma.mean()),
        colour_fraction=float((chroma > 0.1).mean()), mean=float(gray.mean()), std=float(gray.std()),
        content_fraction=float((np.abs(gray - background) > CONTENT_STEP).mean()),
        bright_fraction=float((gray > 0.9).mean()))


def measure(path: str | Path) -> tuple[ImageContent, np.ndarray]:
    """``(content, gray_thumbnail)`` of the image file at ``path``."""
    rgb, gray = thumbnail(path)
    return measure_arrays(np.asarray(rgb), gray), gray


__all__ = ["ImageContent", "measure", "measure_arrays", "thumbnail"]
