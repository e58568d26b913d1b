import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from pulmo.data.image_io import ImageLimits, read_image
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
