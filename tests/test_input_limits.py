"""Front-door limits that bound memory: decoded samples and decoded image bytes, checked
from the header before anything is decoded; decoder errors never quote the file's path."""

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from pulmo.frontdoor import inputs
from pulmo.frontdoor.inputs import InputRejected, Limits, decoded_bytes_per_pixel, inspect_file

STREAMINFO_AT = 8  # 'fLaC' + the metadata block header


def lying_flac(path, seconds=599, rate=192_000, channels=8):
    """A 1.6 KB FLAC of 0.1 s of silence whose STREAMINFO claims ``seconds`` of audio:
    the issue's 599 s x 192 kHz x 8 channel file, as its header describes it."""
    sf.write(path, np.zeros((rate // 10, channels), np.int16), rate, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = STREAMINFO_AT + 10  # 20 bits rate, 3 channels-1, 5 bits-1, then 36 bits of total samples
    field = int.from_bytes(data[at : at + 8], "big")
    field = (field & ~((1 << 36) - 1)) | (seconds * rate)
    data[at : at + 8] = field.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def refused(path, limits=Limits(), name=None):
    with pytest.raises(InputRejected) as info:
        inspect_file(path, limits, name=name)
    return info.value


def test_decoded_sample_cap_refuses_the_192khz_8ch_file_from_its_header(tmp_path, monkeypatch):
    path = lying_flac(tmp_path / "bomb.flac")
    assert sf.info(str(path)).duration == pytest.approx(599.0)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the header check refused it")

    monkeypatch.setattr(inputs.sf, "blocks", no_decoding)
    monkeypatch.setattr(inputs.sf, "read", no_decoding)
    err = refused(path, name="my recording.flac")
    assert (err.status, err.code) == (413, "too_many_samples")
    msg = str(err)
    assert msg.startswith("my recording.flac: 599.0 s x 8 channels x 192000 Hz = 920,064,000 samples")
    assert "57,600,000" in msg and "mono" in msg and "\n" not in msg and str(tmp_path) not in msg


def test_sample_cap_counts_rate_channels_and_seconds(tmp_path):
    stereo, mono = tmp_path / "st.wav", tmp_path / "mo.wav"
    sf.write(stereo, np.zeros((16_000, 2), np.float32), 8000)  # 2 s x 2 ch x 8 kHz = 32,000 samples
    sf.write(mono, np.zeros(16_000, np.float32), 8000)  # 16,000 samples
    small = Limits(max_decoded_samples=20_000)
    assert refused(stereo, small).code == "too_many_samples"
    assert inspect_file(mono, small).details["channels"] == 1
    assert inspect_file(stereo, Limits()).details["channels"] == 2


def test_default_limits_accept_600s_of_48khz_stereo_and_refuse_one_more_channel():
    limits = Limits()
    assert 600 * 48_000 * 2 <= limits.max_decoded_samples < 600 * 48_000 * 3
    assert 599 * 192_000 * 8 > limits.max_decoded_samples


@pytest.mark.parametrize("mode, bpp", [("L", 1), ("P", 1), ("I;16", 2), ("RGB", 4), ("RGBA", 4), ("F", 4), ("I", 4)])
def test_decoded_bytes_per_pixel(mode, bpp):
    assert decoded_bytes_per_pixel(mode) == bpp


def test_image_cap_weighs_bytes_per_pixel(tmp_path):
    gray = np.full((100, 100), 128, np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([gray] * 4), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray.astype(np.float32)).save(tmp_path / "float.tif")
    limits = Limits(max_image_decoded_bytes=20_000)  # 10,000 pixels: 10 KB gray, 40 KB RGBA or float
    assert inspect_file(tmp_path / "gray.png", limits).details["mode"] == "L"
    for name in ("rgba.png", "float.tif"):
        err = refused(tmp_path / name, limits)
        assert (err.status, err.code) == (413, "too_many_pixels") and err.args[0].startswith(f"{name}: 100x100 ")
        assert "0.04 MB decoded, over the limit of 0.02 MB" in str(err)


def test_default_image_limits_weigh_colour_above_gray(tmp_path):
    limits = Limits()
    gray_px = min(limits.max_image_pixels, limits.max_image_decoded_bytes // decoded_bytes_per_pixel("L"))
    colour_px = min(limits.max_image_pixels, limits.max_image_decoded_bytes // decoded_bytes_per_pixel("RGBA"))
    assert colour_px < gray_px
    assert colour_px >= 3000 * 3000  # a 43 x 43 cm detector at 0.14 mm, the common chest X-ray, fits in any mode
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 3000), (90, 90, 90)).save(big)
    assert inspect_file(big, limits).details["width"] == 3000


def test_decoder_errors_name_the_users_file_not_the_path(tmp_path):
    (tmp_path / "upload-7f3a").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + b"\x00" * 100)
    err = refused(tmp_path / "upload-7f3a", name="breath.wav")
    assert err.code == "corrupt" and "breath.wav" in str(err) and str(tmp_path) not in str(err)
    (tmp_path / "upload-9c1d").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    err = refused(tmp_path / "upload-9c1d", name="chest.png")
    assert err.code == "corrupt" and "chest.png" in str(err) and str(tmp_path) not in str(err)
