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

from pulmo.frontdoor.capabilities import Analysis, Figure, Table, sha256_file


def wav(path: Path, seconds: float = 3.0, rate: int = 4000, subtype: str = "PCM_16") -> Path:
    """Breath-like noise, mono."""
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate, subtype=subtype)
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
    accepts_16bit_images = False
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
    accepts_16bit_images = False
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
