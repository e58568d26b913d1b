"""DICOM chest X-rays: files the tests write with pydicom, read as the chest model sees them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid  # noqa: E402

from pulmo.cxr.dicom import is_dicom, read_dicom, read_header  # noqa: E402
from pulmo.data.image_io import read_image  # noqa: E402
from pulmo.errors import DataError  # noqa: E402


def write_dicom(path: Path, pixels: np.ndarray, bits: int = 8, photometric: str = "MONOCHROME2",
                view: str | None = "PA", window: tuple[float, float] | None = None, rle: bool = False) -> Path:
    """A minimal single-frame DICOM file with ``pixels`` ``(H, W)`` unsigned integers."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    if view is not None:
        ds.ViewPosition = view
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint8 if bits <= 8 else np.uint16).tobytes()
    if rle:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def chest_like(h: int = 96, w: int = 80, top: int = 255) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    img = 0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 9.0) + 0.1 * np.random.default_rng(0).random((h, w))
    return np.clip(img * top, 0, top).round().astype(np.int64)


def test_monochrome1_equals_inverted_png(tmp_path: Path) -> None:
    px = chest_like()
    dcm = write_dicom(tmp_path / "scan.dcm", px, photometric="MONOCHROME1")
    Image.fromarray((255 - px).astype(np.uint8)).save(tmp_path / "inverted.png")
    assert is_dicom(dcm) and not is_dicom(tmp_path / "inverted.png")
    np.testing.assert_allclose(read_image(dcm), read_image(tmp_path / "inverted.png"), atol=1e-6)


def test_12_bit_scaled_by_bits_stored_and_rle_decoded(tmp_path: Path) -> None:
    px = chest_like(top=4095)
    plain = read_dicom(write_dicom(tmp_path / "a.dcm", px, bits=12))
    np.testing.assert_allclose(plain, px / 4095.0, atol=1e-6)
    rle = read_dicom(write_dicom(tmp_path / "b.dcm", px, bits=12, rle=True))
    assert read_header(tmp_path / "b.dcm").transfer_syntax == "RLE Lossless"
    np.testing.assert_array_equal(rle, plain)


def test_window_applied(tmp_path: Path) -> None:
    px = np.tile(np.arange(0, 4096, 16), (64, 1))  # 16-bit container, 12 bits stored, a ramp
    out = read_dicom(write_dicom(tmp_path / "w.dcm", px, bits=16, window=(2048, 1024)))
    assert out[0, px[0] < 1500].max() == 0.0 and out[0, px[0] > 2600].min() == 1.0  # saturated outside the window
    inside = out[0, (px[0] > 1700) & (px[0] < 2400)]
    assert np.all(np.diff(inside) > 0)  # a linear ramp inside


def test_signed_rescaled_pixels_scaled_by_the_output_range(tmp_path: Path) -> None:
    px = np.tile(np.arange(-2048, 2048, 16), (64, 1))  # 12 bits stored, signed
    path = write_dicom(tmp_path / "s.dcm", px, bits=12)
    ds = pydicom.dcmread(path)
    ds.PixelRepresentation = 1
    ds.PixelData = px.astype(np.int16).tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000  # output range: -5096 .. 3094
    ds.save_as(path)
    np.testing.assert_allclose(read_dicom(path)[0], (2 * px[0] - 1000 + 5096) / 8190, atol=1e-6)
    ds.WindowCenter, ds.WindowWidth = 0, 2000  # in rescaled units: black below -1000, white above 1000
    ds.save_as(path)
    out = read_dicom(path)[0]
    rescaled = 2 * px[0] - 1000
    assert out[rescaled < -1010].max() == 0.0 and out[rescaled > 1010].min() == 1.0


def test_lateral_refused_in_one_line(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "lat.dcm", chest_like(), view="LL")
    with pytest.raises(DataError, match="lateral view .*ViewPosition LL.* refused") as err:
        read_image(path)
    assert "\n" not in str(err.value)


def test_front_door_sniffs_dicom_and_refuses_lateral(tmp_path: Path) -> None:
    from pulmo.frontdoor.image_content import thumbnail
    from pulmo.frontdoor.inputs import InputRejected, Limits, inspect_file

    path = write_dicom(tmp_path / "scan.dcm", chest_like(top=4095), bits=12)
    info = inspect_file(path, Limits())
    assert (info.kind, info.format, info.details["bits_per_sample"]) == ("image", "DICOM", 12)
    _, gray = thumbnail(path)
    assert gray.shape == (96, 80) and 0 <= gray.min() and gray.max() <= 1
    with pytest.raises(InputRejected) as err:
        inspect_file(write_dicom(tmp_path / "lat.dcm", chest_like(), view="RL"), Limits())
    assert err.value.status == 422 and "lateral" in str(err.value)


def test_service_accepts_a_dicom_chest_xray_and_refuses_a_lateral(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from pulmo.serve.app import ServeSettings
    from tests.frontdoor_fixtures import chest_phantom
    from tests.serve_helpers import LiveServer, fresh_db

    px = np.round(chest_phantom(256) * 4095).astype(np.int64)
    scan = write_dicom(tmp_path / "scan.dcm", 4095 - px, bits=12, photometric="MONOCHROME1")
    lateral = write_dicom(tmp_path / "lat.dcm", px, bits=12, view="LL")
    with fresh_db(tmp_path / "s") as url, LiveServer(ServeSettings(tmp_path / "s", url)) as srv:
        status, body = srv.upload("lat.dcm", lateral.read_bytes())
        assert status == 422 and "lateral view" in json.dumps(body)
        status, accepted = srv.upload("scan.dcm", scan.read_bytes())
        assert status == 202 and accepted["task"] == "cxr", accepted
        done = srv.wait(accepted["id"])
        assert done["status"] == "done", done
        assert done["result"]["task"] == "cxr" and done["result"]["headline"].split(" ")[0].rstrip(":") in (
            "Covid", "Normal", "Viral", "uncertain"), done["result"]["headline"]


def test_a_dicom_that_is_not_a_chest_xray_is_refused_not_sent_to_the_detector(tmp_path: Path) -> None:
    from pulmo.frontdoor.inputs import InputRejected, Limits, inspect_file
    from pulmo.frontdoor.routing import route_file

    noise = (np.random.default_rng(0).random((96, 80)) * 4095).astype(np.uint16)
    path = write_dicom(tmp_path / "noise.dcm", noise, bits=12)
    with pytest.raises(InputRejected) as err:
        route_file(path, inspect_file(path, Limits()))
    assert (err.value.status, err.value.code) == (422, "not_chest_xray") and "(DICOM)" in str(err.value)
