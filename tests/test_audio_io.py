import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from pulmo.config import AudioConfig
from pulmo.data.audio_io import BLOCK_FRAMES, band_pass, fix_length, read_audio, resample
from pulmo.data.cycles import preprocess
from pulmo.errors import DataError


def tone(freq, sr, seconds=1.0):
    return np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr).astype(np.float32)


def rms(x):
    return float(np.sqrt(np.mean(x**2)))


def test_stereo_is_mixed_to_mono_and_stretch_is_cut(tmp_path):
    left, right = tone(200, 8000), np.zeros(8000, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 8000)
    x, sr = read_audio(tmp_path / "s.wav", start_s=0.25, end_s=0.75)
    assert sr == 8000 and x.shape == (4000,)
    np.testing.assert_allclose(x, left[2000:6000] / 2, atol=1e-4)


def test_read_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_audio(tmp_path / "none.wav")
    sf.write(tmp_path / "a.wav", tone(100, 4000), 4000)
    with pytest.raises(DataError, match="outside the audio"):
        read_audio(tmp_path / "a.wav", start_s=5.0)
    bad = tone(100, 4000)
    bad[10] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 4000, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN"):
        read_audio(tmp_path / "nan.wav")


def test_resample_length_and_content():
    y = resample(tone(300, 44100), 44100, 4000)
    assert abs(len(y) - 4000) <= 1
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 4000 / len(y) - 300) < 2


def test_band_pass_keeps_band_and_removes_outside():
    def steady(x, sr):  # skip 50 ms of filter edge transients at each end
        return rms(x[sr // 20 : -sr // 20])

    sr = 4000
    assert steady(band_pass(tone(500, sr), sr, 100, 2000), sr) > 0.65  # in band: ~0.707
    assert steady(band_pass(tone(30, sr), sr, 100, 2000), sr) < 0.01  # below the band
    sr = 16000
    assert steady(band_pass(tone(5000, sr), sr, 100, 2000), sr) < 0.01  # above the band at a higher rate
    assert steady(band_pass(tone(1000, sr), sr, 100, 2000), sr) > 0.65


def test_fix_length_pads_and_crops():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 4), x[:4])
    np.testing.assert_array_equal(fix_length(x, 12), np.r_[x, 0, 0])
    rng = np.random.default_rng(0)
    crops = {tuple(fix_length(x, 4, start=None, rng=rng)) for _ in range(50)}
    assert len(crops) > 1 and all(list(c) == list(range(int(c[0]), int(c[0]) + 4)) for c in crops)


def test_preprocess_resamples_to_config_rate():
    y = preprocess(tone(400, 8000), 8000, AudioConfig())
    assert len(y) == 4000 and y.dtype == np.float32


def test_fix_length_repeat_pads_with_the_cycle_itself():
    x = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 8, pad="repeat"), [1, 2, 3, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(fix_length(np.zeros(0, np.float32), 3, pad="repeat"), [0, 0, 0])
    with pytest.raises(ValueError, match="pad mode"):
        fix_length(x, 8, pad="mirror")


def multichannel(path, seconds, rate, channels, seed=0):
    """Write ``channels`` different noise channels; return the frames ``(N, C)`` as read back."""
    x = (np.random.default_rng(seed).standard_normal((int(seconds * rate), channels)) * 0.1).astype(np.float32)
    sf.write(path, x, rate, subtype="FLOAT")
    return sf.read(str(path), dtype="float32", always_2d=True)[0]


def test_block_mixdown_equals_the_mean_of_the_channels(tmp_path):
    frames = multichannel(tmp_path / "m.wav", 2.0, 48_000, 5)  # 96,000 frames: more than one block
    assert len(frames) > BLOCK_FRAMES
    x, sr = read_audio(tmp_path / "m.wav")
    assert sr == 48_000 and x.dtype == np.float32 and x.shape == (96_000,)
    np.testing.assert_allclose(x, frames.mean(axis=1), rtol=0, atol=1e-7)
    x, _ = read_audio(tmp_path / "m.wav", start_s=1.0, end_s=1.5)
    np.testing.assert_allclose(x, frames[48_000:72_000].mean(axis=1), rtol=0, atol=1e-7)


@pytest.mark.parametrize("to_hz", [4000, 16_000, 44_100])
def test_streaming_resample_equals_read_then_resample(tmp_path, to_hz):
    frames = multichannel(tmp_path / "r.wav", 3.0, 44_100, 3)
    whole = resample(frames.mean(axis=1), 44_100, to_hz)
    x, sr = read_audio(tmp_path / "r.wav", sample_rate_hz=to_hz)
    assert sr == to_hz and x.dtype == np.float32 and x.shape == whole.shape
    np.testing.assert_allclose(x, whole, rtol=0, atol=1e-6)
    part, _ = read_audio(tmp_path / "r.wav", start_s=0.5, end_s=2.0, sample_rate_hz=to_hz)
    expected = resample(frames[22_050:88_200].mean(axis=1), 44_100, to_hz)
    np.testing.assert_allclose(part, expected, rtol=0, atol=1e-6)


def test_nan_in_a_later_block_is_refused(tmp_path):
    x = np.zeros((3 * BLOCK_FRAMES, 2), np.float32)
    x[-10, 1] = np.nan
    sf.write(tmp_path / "late.wav", x, 8000, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN"):
        read_audio(tmp_path / "late.wav", sample_rate_hz=4000)


def test_resampled_read_never_holds_the_file_decoded_in_full(tmp_path):
    """40 s of 48 kHz x 8 channels is 61 MB decoded; read at 4 kHz it needs the 0.6 MB output
    and a few blocks of 2 MB (measured: 7 MB), far below the full decode."""
    path = tmp_path / "big.flac"
    with sf.SoundFile(path, "w", 48_000, 8, subtype="PCM_16", format="FLAC") as f:
        for _ in range(40):
            f.write(np.zeros((48_000, 8), np.int16))
    full = 40 * 48_000 * 8 * 4
    tracemalloc.start()
    try:
        x, sr = read_audio(path, sample_rate_hz=4000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sr == 4000 and x.shape == (160_000,)
    assert peak < full / 4, f"peak {peak / 1e6:.1f} MB against {full / 1e6:.0f} MB decoded in full"
