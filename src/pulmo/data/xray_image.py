"""X-ray images at full bit depth: load, window, and the one explicit conversion to the
detector's input.

Images are kept as ``(H, W)`` ``uint16`` (16-bit scanners) or ``uint8`` arrays through
loading, tiling and augmentation; :func:`to_detector_input` is the single place where
they become the detector's float ``(3, H, W)`` tensor in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pulmo.errors import DataError

MAX_PIXELS = 60_000_000  # refuse larger images before decoding them


def load_xray(path: str | Path, color: bool = False) -> np.ndarray:
    """Read an image as ``(H, W)`` ``uint16`` or ``uint8``.

    16-bit PNG/TIFF stay 16-bit; 8-bit files stay 8-bit. Colour images become luminance,
    or with ``color=True`` stay ``(H, W, 3)`` ``uint8`` (baggage scanners colour-code
    material). Raises :class:`DataError` naming the file when it is missing, unreadable
    or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(f"{path}: {im.width}x{im.height} pixels is larger than the limit of {MAX_PIXELS}")
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L"):
                arr = np.asarray(im, dtype=np.uint16)
            elif mode == "I":
                arr = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
            elif mode == "L":
                arr = np.asarray(im, dtype=np.uint8)
            elif color:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            else:
                arr = np.asarray(im.convert("L"), dtype=np.uint8)
    except DataError:
        raise
    except Exception as err:  # PIL raises several types for broken files
        raise DataError(f"cannot read image {path}: {err}") from None
    if min(arr.shape[:2]) < 2:
        raise DataError(f"{path}: expected an image of at least 2x2 pixels, got shape {arr.shape}")
    return arr


def save_xray(image: np.ndarray, path: str | Path) -> Path:
    """Write a ``uint16`` (16-bit PNG) or ``uint8`` grayscale image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.dtype == np.uint16:
        Image.fromarray(image).save(path)
    elif image.dtype == np.uint8:
        Image.fromarray(image, mode="L").save(path)
    else:
        raise DataError(f"save_xray expects uint8 or uint16, got {image.dtype}")
    return path


def full_scale(dtype: np.dtype) -> float:
    """The largest value of an image dtype (65535 for 16-bit, 255 for 8-bit)."""
    return float(np.iinfo(dtype).max)


@dataclass(frozen=True)
class Window:
    """Intensity window: ``percentile`` clips to the image's [p, 100-p] percentiles;
    ``percentile=0`` maps the dtype's full range."""

    percentile: float = 0.5


def window_levels(image: np.ndarray, window: Window) -> tuple[float, float]:
    """``(low, high)`` intensities of the window, in the image's own units."""
    if window.percentile <= 0:
        return 0.0, full_scale(image.dtype)
    lo, hi = np.percentile(image, [window.percentile, 100 - window.percentile])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def to_detector_input(image: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    """The explicit conversion: ``(H, W)`` (or ``(H, W, 3)``) integer image -> ``(3, H, W)``
    float32 in [0, 1].

    ``levels`` (low, high) come from :func:`window_levels` of the *whole* image, so every
    tile of one image is windowed the same way. No 8-bit rounding happens on the way.
    """
    lo, hi = levels
    x = (image.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    x = np.clip(x, 0.0, 1.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)) if x.ndim == 3 else np.repeat(x[None], 3, axis=0)


def to_display_uint8(image: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    """``(H, W, 3)`` uint8 for drawing and saving previews (not used for the detector)."""
    return (to_detector_input(image, levels).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


def resize_xray(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize by ``scale`` keeping the dtype (bilinear, via 32-bit float so 16-bit data
    keeps its depth); ``(H, W, C)`` images channel by channel."""
    if scale == 1.0:
        return image
    if image.ndim == 3:
        return np.stack([resize_xray(image[..., c], scale) for c in range(image.shape[2])], axis=2)
    h, w = image.shape
    size = (max(2, int(round(w * scale))), max(2, int(round(h * scale))))
    im = Image.fromarray(image.astype(np.float32), mode="F").resize(size, Image.BILINEAR)
    return np.clip(np.rint(np.asarray(im)), 0, full_scale(image.dtype)).astype(image.dtype)
