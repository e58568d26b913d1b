import numpy as np
import pytest
import soundfile as sf

from pulmo.config import AudioConfig
from pulmo.data.audio_io import band_pass, fix_length, read_audio, resample
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
