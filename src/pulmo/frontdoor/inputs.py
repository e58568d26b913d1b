"""Checking an input file before anything decodes it in full.

Order of checks, cheapest first: size on disk; the first bytes (which kind of file);
the header (soundfile for audio: rate, channels, frames; Pillow for images: size and
mode, read lazily); the limits; and only then one full decode, so a truncated file
is caught here with a clear message rather than deep inside a model.

Every rejection is an :class:`InputRejected` with the HTTP status the service answers
and a short machine-readable ``code``; the command line prints its message.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from pulmo.errors import DataError

AUDIO_MAGIC = {b"RIFF": "WAV", b"RF64": "WAV", b"fLaC": "FLAC", b"OggS": "OGG", b"FORM": "AIFF", b"ID3": "MP3"}
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
               b"BM": "BMP", b"GIF8": "GIF"}
BITS_PER_SAMPLE = {"1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "RGB": 8, "RGBA": 8, "RGBX": 8, "CMYK": 8, "YCbCr": 8,
                   "LAB": 8, "HSV": 8, "I": 32, "F": 32, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16}


class InputRejected(DataError):
    """An input file failed a check. ``status``: HTTP status; ``code``: short reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Limits:
    """What the front door accepts. Sizes in bytes, durations in seconds, rates in Hz.

    The limits bound peak memory (target: 2 GB for any accepted input, command line or
    service), all checked from the header before anything is decoded:

    - ``max_decoded_samples``: rate x channels x seconds, 57.6 M = 600 s of 48 kHz stereo
      (192 kHz is accepted up to 150 s stereo or 37 s of 8 channels). Audio is decoded in
      blocks of 65,536 frames and mixed to mono block by block
      (:func:`pulmo.data.audio_io.read_audio`), so no reader holds the channels in full; a
      reader that keeps the native rate holds at most 57.6 M float32 = 230 MB, one reading at
      16 kHz or less at most 38 MB. Each full pass over the samples (check, routing, model)
      also stays near a second instead of the half minute that 920 M samples took.
    - ``max_image_pixels`` (any mode) and ``max_image_decoded_bytes`` (pixels x the bytes a
      pixel takes decoded, :func:`decoded_bytes_per_pixel`: 1 for 8-bit gray or palette, 2
      for 16-bit gray, 4 for RGB, RGBA, CMYK, 32-bit integer or float): 10 M pixels (e.g.
      3650 x 2740), 9 M of a 4-byte mode. Measured with ``benchmarks/robustness.py``: the
      service holds every model (1.5-1.6 GB resident before any pixel; the command line
      1.3-1.4 GB with one), and an image then costs the service about 36 bytes a pixel in
      8- or 16-bit gray and 41 in colour (the detector: full-size float64 percentiles and a
      full-size float display copy; chest X-ray about 28), the command line about half.
      So 10 M gray pixels add about 360 MB and 9 M colour pixels about 370 MB: the service
      stays under 2 GB (24 M pixels reached 2.4 GB). Once the detector stops making
      full-size float copies the limits can grow again (24 M pixels cost the command line
      1.76 GB).
    """

    max_upload_bytes: int = 64 * 2**20
    max_audio_seconds: float = 600.0
    min_sample_rate_hz: int = 1000  # a floor for any audio; each capability may ask for more
    max_sample_rate_hz: int = 192_000
    max_decoded_samples: int = 600 * 48_000 * 2  # rate x channels x seconds
    max_image_pixels: int = 10_000_000
    max_image_decoded_bytes: int = 36_000_000  # pixels x decoded_bytes_per_pixel(mode)
    min_image_side: int = 16


def decoded_bytes_per_pixel(mode: str) -> int:
    """Bytes one pixel of a PIL ``mode`` takes once decoded (PIL keeps every multi-band mode in 4)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


@dataclass(frozen=True)
class InputInfo:
    """What the header said. ``kind``: ``"audio"`` or ``"image"``; ``details``: header facts
    (audio: ``sample_rate_hz``, ``channels``, ``duration_s``, ``subtype``; image: ``width``,
    ``height``, ``mode``, ``bits_per_sample``)."""

    name: str
    bytes: int
    kind: str
    format: str
    details: dict[str, Any] = field(default_factory=dict)


def sniff(head: bytes) -> tuple[str, str] | None:
    """``(kind, format)`` from a file's first bytes, or None when unknown."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] != b"WAVE":
        return None
    if head[:1] == b"\xff" and len(head) > 1 and head[1] & 0xE0 == 0xE0 and head[:3] != b"\xff\xd8\xff":
        return "audio", "MP3"
    for magic, fmt in AUDIO_MAGIC.items():
        if head.startswith(magic):
            return "audio", fmt
    for magic, fmt in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return "image", fmt
    if head[128:132] == b"DICM":  # DICOM Part 10: a 128-byte preamble, then the signature
        return "image", "DICOM"
    return None


def inspect_file(path: str | Path, limits: Limits, name: str | None = None) -> InputInfo:
    """Check one file against ``limits`` and return what its header says.

    Raises:
        InputRejected: 400 empty/truncated/corrupt, 413 too large (bytes, seconds, pixels),
        415 not audio or image, 422 sample rate or image size outside what models take.
    """
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise InputRejected(404, "not_found", f"{name}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise InputRejected(400, "empty", f"{name}: the file is empty (0 bytes)")
    if size > limits.max_upload_bytes:
        raise InputRejected(413, "too_large", f"{name}: {size} bytes, over the limit of {limits.max_upload_bytes} bytes")
    with path.open("rb") as fh:
        head = fh.read(132)
    kind = sniff(head)
    if kind is None:
        raise InputRejected(415, "wrong_type", f"{name}: not a recognised audio (WAV, FLAC, OGG, AIFF, MP3) or image "
                            "(PNG, JPEG, TIFF, BMP, GIF, DICOM) file by its content")  # never echo the bytes
    if kind[0] == "audio":
        details = _check_audio(path, name, limits)
    elif kind[1] == "DICOM":
        details = _check_dicom(path, name, limits)
    else:
        details = _check_image(path, name, limits)
    return InputInfo(name=name, bytes=size, kind=kind[0], format=kind[1], details=details)


def _check_audio(path: Path, name: str, limits: Limits) -> dict[str, Any]:
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile raises several types for bad headers
        raise InputRejected(400, "corrupt", f"{name}: unreadable audio header ({_reason(err, path, name)})") from None
    rate, frames, channels = int(info.samplerate), int(info.frames), int(info.channels)
    if frames <= 0:
        raise InputRejected(400, "no_samples", f"{name}: the audio holds no samples")
    duration = frames / rate
    if duration > limits.max_audio_seconds:
        raise InputRejected(413, "too_long", f"{name}: {duration:.1f} s of audio, over the limit of "
                            f"{limits.max_audio_seconds:.0f} s")
    if not limits.min_sample_rate_hz <= rate <= limits.max_sample_rate_hz:
        raise InputRejected(422, "sample_rate", f"{name}: sample rate {rate} Hz is outside "
                            f"{limits.min_sample_rate_hz}-{limits.max_sample_rate_hz} Hz")
    samples = frames * channels
    if samples > limits.max_decoded_samples:
        raise InputRejected(413, "too_many_samples", f"{name}: {duration:.1f} s x {channels} channels x {rate} Hz = "
                            f"{samples:,} samples to decode, over the limit of {limits.max_decoded_samples:,}; "
                            "mix it down to mono or resample it to 16 kHz or less (e.g. sox IN -c 1 -r 16000 OUT)")
    short = wav_data_shortfall(path) if info.format in ("WAV", "WAVEX") else None
    if short is not None:
        raise InputRejected(400, "truncated", f"{name}: truncated WAV: the header promises {short[0]} bytes of samples, "
                            f"the file holds {short[1]}")
    decoded = 0
    try:  # one pass over the samples: a truncated or corrupt body fails here
        for block in sf.blocks(str(path), blocksize=1 << 16, dtype="float32", always_2d=True):
            decoded += block.shape[0]
    except Exception as err:
        raise InputRejected(400, "truncated", f"{name}: audio body unreadable after {decoded} samples "
                            f"({_reason(err, path, name)})") from None
    if decoded < frames:
        raise InputRejected(400, "truncated", f"{name}: truncated audio: the header promises {frames} samples, "
                            f"the file holds {decoded}")
    return {"sample_rate_hz": rate, "channels": channels, "duration_s": round(duration, 3),
            "subtype": info.subtype}


def wav_data_shortfall(path: Path) -> tuple[int, int] | None:
    """``(declared, present)`` bytes of a RIFF/WAVE file's ``data`` chunk when fewer are
    present than its header declares (libsndfile reads such a file without complaint,
    shortened); None when complete, or when the size is unknown (streamed 0xFFFFFFFF)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        if fh.read(12)[8:12] != b"WAVE":
            return None
        while True:
            header = fh.read(8)
            if len(header) < 8:
                return None
            chunk_id, chunk_size = header[:4], int.from_bytes(header[4:], "little")
            if chunk_id == b"data":
                present = size - fh.tell()
                return (chunk_size, present) if chunk_size != 0xFFFFFFFF and chunk_size > present else None
            fh.seek(chunk_size + (chunk_size & 1), 1)


def _check_image(path: Path, name: str, limits: Limits) -> dict[str, Any]:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)  # lazy: reads the header only
    except Image.DecompressionBombError as err:
        raise InputRejected(413, "too_many_pixels", f"{name}: decompression-bomb-like image ({err})") from None
    except Exception as err:
        raise InputRejected(400, "corrupt", f"{name}: unreadable image header ({_reason(err, path, name)})") from None
    with im:
        width, height = im.size
        pixels = width * height
        if pixels > limits.max_image_pixels:
            raise InputRejected(413, "too_many_pixels", f"{name}: {width}x{height} = {pixels} pixels, over the limit of "
                                f"{limits.max_image_pixels} (decompression-bomb-like image refused before decoding)")
        mode = im.mode
        decoded = pixels * decoded_bytes_per_pixel(mode)
        if decoded > limits.max_image_decoded_bytes:
            raise InputRejected(413, "too_many_pixels", f"{name}: {width}x{height} {mode} image = {decoded / 1e6:.3g} MB "
                                f"decoded, over the limit of {limits.max_image_decoded_bytes / 1e6:.3g} MB; scale it "
                                "down or save it as 8-bit grayscale")
        if min(width, height) < limits.min_image_side:
            raise InputRejected(422, "too_small", f"{name}: {width}x{height} pixels; at least "
                                f"{limits.min_image_side} pixels a side are needed")
        try:  # within the pixel limit, one full decode: a truncated body fails here
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
        except Exception as err:
            raise InputRejected(400, "truncated", f"{name}: image data unreadable ({_reason(err, path, name)})") from None
    return {"width": width, "height": height, "mode": mode, "bits_per_sample": BITS_PER_SAMPLE.get(mode, 8)}


def _check_dicom(path: Path, name: str, limits: Limits) -> dict[str, Any]:
    """DICOM: the header (no pixels) for size and view, then one full decode."""
    from pulmo.cxr.dicom import read_dicom, read_header
    from pulmo.errors import DataError

    try:
        head = read_header(path)
    except DataError as err:
        code = "not_frontal" if "ViewPosition" in str(err) else "corrupt"
        raise InputRejected(422 if code == "not_frontal" else 400, code, str(err).replace(path.name, name, 1)) from None
    pixels = head.width * head.height
    if pixels > limits.max_image_pixels or pixels * 2 > limits.max_image_decoded_bytes:
        raise InputRejected(413, "too_many_pixels", f"{name}: {head.width}x{head.height} DICOM image, over the limit "
                            f"of {limits.max_image_pixels} pixels / {limits.max_image_decoded_bytes / 1e6:.3g} MB decoded")
    if min(head.width, head.height) < limits.min_image_side:
        raise InputRejected(422, "too_small", f"{name}: {head.width}x{head.height} pixels; at least "
                            f"{limits.min_image_side} pixels a side are needed")
    try:
        read_dicom(path)
    except DataError as err:
        raise InputRejected(400, "truncated", str(err).replace(path.name, name, 1)) from None
    return {"width": head.width, "height": head.height, "mode": "DICOM " + head.photometric,
            "bits_per_sample": head.bits_stored, "view_position": head.view_position,
            "transfer_syntax": head.transfer_syntax}


def _reason(err: Exception, path: Path, name: str) -> str:
    """A decoder's error text with the file's own path replaced by the user's ``name``
    (libsndfile and Pillow quote the path, which on the service is a server folder)."""
    return str(err).replace(str(path), name).replace(str(path.resolve()), name)
