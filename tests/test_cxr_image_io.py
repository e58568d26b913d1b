import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from pulmo.data.image_io import ImageLimits, read_image, to_gray_float
from pulmo.errors import DataError


def _ramp(h=64, w=80):
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


def test_16bit_png_keeps_its_range(tmp_path):
    raw = (_ramp() * 65535).astype(np.uint16)
    path = tmp_path / "x16.png"
    Image.fromarray(raw).save(path)
    assert Image.open(path).mode.startswith("I")
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == (64, 80)
    np.testing.assert_allclose(img, raw / 65535.0, atol=1e-6)


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :20, 3] = 255  # left half opaque, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png", ImageLimits(min_side_px=8))
    assert img[:, :20].mean() == pytest.approx(200 / 255, abs=0.01) and img[:, 20:].max() == 0


def test_cmyk_jpeg_loads_as_gray(tmp_path):
    Image.fromarray((_ramp() * 255).astype(np.uint8)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    img = read_image(tmp_path / "c.jpg")
    assert img.shape == (64, 80) and img[:, -5:].mean() > img[:, :5].mean() + 0.5


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray((np.random.default_rng(0).random((200, 200)) * 255).astype(np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"t\.png: image data is truncated or corrupt"):
        read_image(path)


def test_one_pixel_image_is_refused(tmp_path):
    Image.new("L", (1, 1)).save(tmp_path / "p.png")
    with pytest.raises(DataError, match=r"p\.png: image is 1x1 px; at least 32 px"):
        read_image(tmp_path / "p.png")


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height but holds almost no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    _png_header_only(path, 20000, 20000)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"huge\.png: image .*too large|huge\.png: image is 20000x20000"):
        read_image(path)
    assert time.perf_counter() - start < 1.0  # 400 Mpixel were never allocated
    _png_header_only(path, 17000, 1000)  # under PIL's bomb limit, over our side limit
    with pytest.raises(DataError, match="refused before decoding"):
        read_image(path)


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(DataError, match="image not found"):
        read_image(tmp_path / "none.png")
    (tmp_path / "n.png").write_text("not an image")
    with pytest.raises(DataError, match="not a readable image file"):
        read_image(tmp_path / "n.png")


def _reference_gray(im):
    """The conversion written plainly with full-size float64 / int64 copies (what to_gray_float
    computed before it was made lean): the lean one must match it exactly."""
    if im.mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if im.mode == "I":
        raw = np.asarray(im, dtype=np.int64)
        top = 65535.0 if raw.max(initial=0) <= 65535 else float(2**31 - 1)
        return np.clip(raw, 0, None).astype(np.float32) / top
    if im.mode == "F":
        raw = np.asarray(im, dtype=np.float32)
        lo, hi = float(np.nanmin(raw)), float(np.nanmax(raw))
        return (raw - lo) / (hi - lo)
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    return (rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) * rgba[..., 3]


def _modes(rng, h=600, w=70):  # 600 rows: RGBA runs in several bands of ROWS_AT_ONCE
    return {
        "I small": Image.fromarray(rng.integers(-5, 60_000, (h, w)).astype(np.int32), "I"),
        "I large": Image.fromarray(rng.integers(-5, 2**31 - 1, (h, w)).astype(np.int32), "I"),
        "I;16": Image.fromarray((rng.random((h, w)) * 65535).astype(np.uint16)),
        "F": Image.fromarray((rng.standard_normal((h, w)) * 300).astype(np.float32)),
        "RGBA": Image.fromarray((rng.random((h, w, 4)) * 255).astype(np.uint8), "RGBA"),
        "LA": Image.fromarray((rng.random((h, w, 2)) * 255).astype(np.uint8), "LA"),
    }


def test_lean_conversion_matches_the_plain_one_exactly():
    for label, im in _modes(np.random.default_rng(3)).items():
        got, want = to_gray_float(im), _reference_gray(im)
        assert got.dtype == np.float32 and got.shape == want.shape, label
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=label)


def test_32bit_integer_image_makes_no_int64_copy():
    im = Image.fromarray(np.random.default_rng(4).integers(0, 2**31 - 1, (1000, 1000)).astype(np.int32), "I")
    im.load()
    tracemalloc.start()
    try:
        to_gray_float(im)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * 1_000_000, f"{peak / 1e6:.1f} bytes a pixel"  # int32 + float32 (+ PIL's bytes); int64 made 20
