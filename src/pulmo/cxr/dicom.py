"""DICOM chest X-rays in: one gray float array out, as a radiologist's viewer would show it.

- the header is read first (``stop_before_pixels``) and the pixel count checked before any
  pixel is decoded;
- lateral and oblique views (``ViewPosition`` LL, RL, LLO, RLO, LATERAL) are refused in one
  line: the chest model reads frontal (PA/AP) films only;
- pixel data of any transfer syntax pydicom's installed decoders handle (uncompressed,
  RLE Lossless, JPEG through Pillow, ...), 8 to 16 bits stored, signed or not;
- the modality LUT (rescale slope/intercept) then the VOI LUT or window is applied, and the
  result scaled by that output's full range (not by the image's own min/max), so a window
  keeps its meaning; without a VOI, the stored bit range (``BitsStored``) sets the scale;
- MONOCHROME1 (white = low values) is inverted, so air is dark as in MONOCHROME2;
- colour (RGB / YBR) is converted to luminance; of a multi-frame file, frame 0 is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pulmo.errors import DataError

PREAMBLE = 128
MAGIC = b"DICM"
NOT_FRONTAL = {"LL": "left lateral", "RL": "right lateral", "LATERAL": "lateral", "LAT": "lateral",
               "LLO": "left oblique", "RLO": "right oblique"}


def is_dicom(path: str | Path) -> bool:
    """True when the file has the DICOM Part 10 signature (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(PREAMBLE + 4)[PREAMBLE:] == MAGIC
    except OSError:
        return False


@dataclass(frozen=True)
class DicomHeader:
    """Header facts: ``width``/``height`` in pixels, ``bits_stored``, ``photometric``,
    ``view_position`` ('' when absent), ``transfer_syntax`` (its name), ``frames``."""

    width: int
    height: int
    bits_stored: int
    photometric: str
    view_position: str
    transfer_syntax: str
    frames: int


def read_header(path: str | Path) -> DicomHeader:
    """Read the header only; raises ``DataError`` (one line) for a file that is not a readable
    DICOM image or whose view is lateral / oblique."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:
        raise DataError(f"{path.name}: unreadable DICOM header ({err})") from None
    if "Rows" not in ds or "Columns" not in ds:
        raise DataError(f"{path.name}: DICOM file holds no image (no Rows/Columns)")
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if view in NOT_FRONTAL:
        raise DataError(f"{path.name}: {NOT_FRONTAL[view]} view (DICOM ViewPosition {view}) refused: the chest X-ray "
                        "model reads frontal (PA/AP) films only")
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return DicomHeader(int(ds.Columns), int(ds.Rows), int(ds.get("BitsStored", 8)),
                       str(ds.get("PhotometricInterpretation", "MONOCHROME2")), view,
                       getattr(tsyntax, "name", str(tsyntax)), int(ds.get("NumberOfFrames", 1) or 1))


def _output_range(ds: object, has_voi: bool) -> tuple[float, float]:
    """The value range of the modality (+ VOI) output, as pydicom's windowing defines it."""
    bits = int(ds.BitsStored)  # type: ignore[attr-defined]
    if has_voi and "VOILUTSequence" in ds and "WindowCenter" not in ds:  # type: ignore[operator]
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)  # type: ignore[attr-defined]
    if int(ds.get("PixelRepresentation", 0)) == 0:  # type: ignore[attr-defined]
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")  # type: ignore[attr-defined]
    if slope is not None and intercept is not None:
        a, b = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
        lo, hi = min(a, b), max(a, b)
    return lo, hi


def read_dicom(path: str | Path, max_pixels: int = 100_000_000) -> np.ndarray:
    """Load a DICOM X-ray as grayscale ``(H, W)`` float32 in [0, 1] (see the module doc).

    Raises ``DataError`` (one line, naming the file) for a lateral/oblique view, more than
    ``max_pixels`` pixels (checked before decoding), or pixel data the installed decoders cannot read.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    head = read_header(path)
    if head.width * head.height > max_pixels:
        raise DataError(f"{path.name}: DICOM image is {head.width}x{head.height} px, over the limit of "
                        f"{max_pixels} pixels; refused before decoding")
    ds = pydicom.dcmread(path)
    try:
        arr = ds.pixel_array
    except Exception as err:
        raise DataError(f"{path.name}: cannot decode DICOM pixel data ({head.transfer_syntax}): "
                        f"{str(err).splitlines()[0]}") from None
    if head.frames > 1:
        arr = arr[0]
    if head.photometric.startswith(("RGB", "YBR")):
        if head.photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, head.photometric, "RGB")
        gray = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.ascontiguousarray(np.clip(gray / float(2**head.bits_stored - 1), 0, 1), dtype=np.float32)
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    lo, hi = _output_range(ds, has_voi)
    values = apply_modality_lut(arr, ds)
    if has_voi:
        values = apply_voi_lut(values, ds)
    gray = np.asarray(values, dtype=np.float32)  # float32 in place from here: one full-size copy, not three
    del values
    if hi > lo:
        gray -= np.float32(lo)
        gray /= np.float32(hi - lo)
    else:
        gray = np.zeros(arr.shape, np.float32)
    np.clip(gray, 0.0, 1.0, out=gray)
    if head.photometric == "MONOCHROME1":
        np.subtract(np.float32(1.0), gray, out=gray)
    return np.ascontiguousarray(gray, dtype=np.float32)


__all__ = ["DicomHeader", "MAGIC", "NOT_FRONTAL", "PREAMBLE", "is_dicom", "read_dicom", "read_header"]
