"""Safe image loading for chest X-rays: any common file in, one grayscale float array out.

The header is read first and the pixel count checked before anything is decoded, so a
20000 x 20000 file (or a decompression bomb) is refused without allocating its pixels.
Every failure raises :class:`~pulmo.errors.DataError` naming the file and the problem.

Modes handled: 1-bit, 8-bit gray, palette, RGB, RGBA / LA (alpha composited on black: a
transparent pixel carries no signal), CMYK (JPEG from print workflows), 16-bit and 32-bit
integer gray (PNG/TIFF from DICOM exports, scaled by the container's range) and float.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pulmo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm")


@dataclass(frozen=True)
class ImageLimits:
    """Sizes refused before decoding: fewer than ``min_side_px`` pixels on a side, more than
    ``max_side_px`` on a side, or more than ``max_pixels`` in all."""

    min_side_px: int = 32
    max_side_px: int = 16384
    max_pixels: int = 100_000_000


def read_image(path: str | Path, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Load ``path`` as grayscale ``(H, W)`` float32 in ``[0, 1]``.

    Raises ``DataError`` for a missing or unreadable file, an unknown format, a size outside
    ``limits`` (checked from the header, before decoding), or truncated / corrupt pixel data.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    from pulmo.cxr.dicom import is_dicom, read_dicom

    if is_dicom(path):  # DICOM Part 10: VOI LUT / window, MONOCHROME1, lateral views refused
        return read_dicom(path, limits.max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)  # lazy: reads the header only
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image file (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{path}: image too large to decode safely ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot open image: {err}") from None
    with im:
        check_size(path, im.size, limits)
        try:
            im.load()  # decode now; truncated or corrupt data raises here
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{path}: image data is truncated or corrupt ({err})") from None
        return to_gray_float(im, path)


def check_size(path: Path, size: tuple[int, int], limits: ImageLimits) -> None:
    """Refuse sizes outside ``limits``; ``size`` is ``(width, height)`` from the header."""
    w, h = size
    if min(w, h) < limits.min_side_px:
        raise DataError(f"{path}: image is {w}x{h} px; at least {limits.min_side_px} px per side is needed")
    if max(w, h) > limits.max_side_px or w * h > limits.max_pixels:
        raise DataError(f"{path}: image is {w}x{h} px, larger than the limit ({limits.max_side_px} px per side, "
                        f"{limits.max_pixels} pixels); refused before decoding")


def to_gray_float(im: Image.Image, path: Path | str = "<image>") -> np.ndarray:
    """A decoded PIL image as grayscale ``(H, W)`` float32 in ``[0, 1]`` (see module doc).

    Memory: besides the decoded image, one integer copy of its pixels (in the container's
    own width: 1, 2 or 4 bytes a pixel) and the float32 result (4 bytes a pixel); arithmetic
    runs in place, and RGBA is composited :data:`ROWS_AT_ONCE` rows at a time, so no
    full-size float64, int64 or ``(H, W, 4)`` float copy is made.
    """
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.float32)
        arr /= 65535.0
    elif mode == "I":
        raw = np.array(im, dtype=np.int32)  # PIL's own 32-bit storage; a writable copy for the clip
        top = 65535.0 if raw.max(initial=0) <= 65535 else float(2**31 - 1)
        np.maximum(raw, 0, out=raw)
        arr = raw.astype(np.float32)
        del raw
        arr /= top
    elif mode == "F":
        raw = np.asarray(im, dtype=np.float32)
        lo, hi = float(np.nanmin(raw)), float(np.nanmax(raw))
        if hi > lo:
            arr = np.subtract(raw, lo, dtype=np.float32)
            arr /= hi - lo
        else:
            arr = np.zeros(raw.shape, np.float32)
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        arr = _composite_on_black(np.asarray(im if mode == "RGBA" else im.convert("RGBA")))
    elif mode in ("L", "1", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(im if mode == "L" else im.convert("L"), dtype=np.float32)
        arr /= 255.0
    else:
        raise DataError(f"{path}: unsupported image mode {mode!r}")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: image has non-finite pixel values")
    return np.ascontiguousarray(arr, dtype=np.float32)


ROWS_AT_ONCE = 256  # rows of an RGBA image converted to float at a time (256 x 16384 x 16 B = 64 MiB at most)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's convert("L")


def _composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """``(H, W, 4)`` uint8 -> ``(H, W)`` float32: luminance times alpha, all in [0, 1]
    (a transparent pixel carries no signal); converted a band of rows at a time."""
    out = np.empty(rgba.shape[:2], np.float32)
    for top in range(0, rgba.shape[0], ROWS_AT_ONCE):
        band = np.asarray(rgba[top : top + ROWS_AT_ONCE], dtype=np.float32) / 255.0
        out[top : top + ROWS_AT_ONCE] = (band[..., :3] @ LUMA) * band[..., 3]
    return out
