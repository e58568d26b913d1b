"""Small input files for the front-door and service tests, made here; and a fake image
capability that shows how a capability joins (and lets image checks be tested before an
image model is on main)."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from pulmo.cxr.synthetic import chest_phantom  # noqa: F401  (re-exported for the tests)
from pulmo.frontdoor.capabilities import Analysis, Figure, Table
from pulmo.hashing import sha256_file


def wav(path: Path, seconds: float = 3.0, rate: int = 4000, subtype: str = "PCM_16") -> Path:
    """Stethoscope-like breath sound, mono: noise below about 500 Hz whose level rises and falls
    with breathing at 15 breaths/min (so the front door's content checks take it for a recording)."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    low = sosfilt(butter(4, min(500.0, 0.4 * rate), fs=rate, output="sos"), rng.standard_normal(n))
    breathing = 0.15 + 0.85 * np.sin(np.pi * 0.25 * t) ** 2
    x = low * breathing
    sf.write(path, (0.3 * x / (np.abs(x).max() + 1e-9)).astype(np.float32), rate, subtype=subtype)
    return path


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def png(path: Path, size: tuple[int, int] = (64, 48), mode: str = "L") -> Path:
    from PIL import Image

    arr = np.linspace(0, 255 if mode == "L" else 65535, size[0] * size[1]).reshape(size[1], size[0])
    arr = arr.astype(np.uint8 if mode == "L" else np.uint16)
    Image.fromarray(arr).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` greyscale pixels, with one tiny IDAT:
    the shape of a decompression bomb, without the bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


class FakeImageCapability:
    """Mean grey level of an image; a stand-in for chest X-ray until its adapter joins."""

    name = "fake-image"
    kinds = frozenset({"image"})
    options: tuple[str, ...] = ()

    def __init__(self, checkpoint_file: Path) -> None:
        self.checkpoint_file = checkpoint_file

    def analyze(self, path: Path, checkpoint: str | None = None, options: Mapping[str, Any] | None = None) -> Analysis:
        from PIL import Image

        with Image.open(path) as im:
            mean = float(np.asarray(im.convert("L"), dtype=np.float32).mean())
            buf = io.BytesIO()
            im.convert("L").save(buf, format="PNG")
        model = {"name": "mean-grey", "checkpoint": self.checkpoint_file.name,
                 "sha256": sha256_file(self.checkpoint_file), "pulmo_version": "test"}
        return Analysis(self.name, f"mean grey level {mean:.1f}", {"mean": mean, "model": model, "checkpoint_given": checkpoint},
                        Table(["statistic", "value"], [["mean", mean]]), [Figure("grey", buf.getvalue(), "the image in grey")])


class BlockingCapability:
    """An audio capability that waits for ``release`` before answering: an analysis that is
    still running when the service stops."""

    name = "blocking-audio"
    kinds = frozenset({"audio"})
    options: tuple[str, ...] = ()

    def __init__(self, checkpoint_file: Path) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.checkpoint_file = checkpoint_file

    def analyze(self, path: Path, checkpoint: str | None = None, options: Mapping[str, Any] | None = None) -> Analysis:
        self.started.set()
        self.release.wait(timeout=60)
        model = {"name": "blocker", "checkpoint": self.checkpoint_file.name,
                 "sha256": sha256_file(self.checkpoint_file), "pulmo_version": "test"}
        return Analysis(self.name, "released", {"model": model, "thread": threading.current_thread().name})


def image_file(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    """Save ``pixels`` in [0, 1] (``(H, W)`` gray or ``(H, W, 3)`` RGB) as ``mode``: "L" 8-bit,
    "I;16" 16-bit, "F" 32-bit float (TIFF), "RGB"."""
    from PIL import Image

    if mode == "I;16":
        im = Image.fromarray((pixels * 65535).astype(np.uint16))
    elif mode == "F":
        im = Image.fromarray(pixels.astype(np.float32), mode="F")
    else:
        im = Image.fromarray((pixels * 255).astype(np.uint8))
    im.save(path)
    return path


def baggage_like(size: int = 256, seed: int = 0) -> np.ndarray:
    """``(size, size, 3)`` in [0, 1]: a colour-coded baggage scan's look, white background with
    orange, green and blue objects."""
    rng = np.random.default_rng(seed)
    img = np.ones((size, size, 3))
    colours = [(0.95, 0.6, 0.2), (0.3, 0.7, 0.3), (0.2, 0.3, 0.8)]
    for _ in range(12):
        y0, x0 = rng.integers(0, size - 60, 2)
        h, w = rng.integers(20, 60, 2)
        img[y0:y0 + h, x0:x0 + w] = colours[int(rng.integers(3))]
    return img


def air_breathing(seconds: float = 12.0, rate: int = 16000, bpm: float = 15.0) -> np.ndarray:
    """Breathing heard through the air: turbulent noise from 300 Hz to 4 kHz whose level follows
    the breaths (``bpm`` per minute), float32 ``(seconds * rate,)``."""
    from scipy.signal import butter, sosfilt

    n = int(seconds * rate)
    t = np.arange(n) / rate
    flow = sosfilt(butter(4, [300, min(4000, 0.45 * rate)], btype="bandpass", fs=rate, output="sos"),
                   np.random.default_rng(1).standard_normal(n))
    x = flow * (0.05 + np.sin(np.pi * bpm / 60 * t) ** 4)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)
