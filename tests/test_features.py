import numpy as np
import pytest
import torch

from pulmo.errors import ConfigError
from pulmo.features import create_features, feature_names


@pytest.mark.parametrize(
    "name, params, bins",
    [
        ("stft", {}, 201),  # 100 ms window at 4 kHz -> n_fft 400 -> 201 bins
        ("mel", {"n_mels": 48}, 48),
        ("mfcc", {"n_mels": 48, "n_mfcc": 20}, 20),
        ("cqt", {"n_bins": 60, "hop_length": 160}, 60),
    ],
)
def test_shapes_and_round_trip(name, params, bins):
    fx = create_features(name, sample_rate_hz=4000, **params)
    x = torch.randn(3, 10000)
    y = fx(x)
    frames = 10000 // 160 + 1  # 40 ms hop, centred frames
    assert y.shape == (3, 1, bins, frames)
    assert torch.isfinite(y).all()
    assert y[0].mean().abs() < 1e-4 and (y[0].std() - 1).abs() < 1e-2  # standardised per example
    same = create_features(fx.name, **fx.config_dict())
    assert same.config_dict() == fx.config_dict()
    torch.testing.assert_close(same(x), y)


def test_registry_lists_all():
    assert {"stft", "mel", "mfcc", "cqt"} <= set(feature_names())


def test_stft_puts_a_tone_in_its_bin():
    sr = 4000
    t = torch.arange(10000) / sr
    fx = create_features("stft", sample_rate_hz=sr)
    y = fx(torch.sin(2 * np.pi * 500 * t)[None])
    assert int(y[0, 0, :, 30].argmax()) == 50  # 500 Hz / (4000 Hz / 400)


def test_zero_padding_is_floored_not_minus_infinity():
    x = torch.zeros(1, 10000)
    x[0, :3000] = torch.randn(3000)
    assert torch.isfinite(create_features("stft")(x)).all()


def test_errors():
    with pytest.raises(ConfigError, match="invalid parameters"):
        create_features("stft", window_size=3)
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        create_features("wavelet")
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        create_features("stft")(torch.randn(10000))


def test_frequency_normalisation_cancels_a_fixed_channel_response():
    """A stationary filter (a device's response) adds a per-bin constant to log power."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(0)
    x = rng.standard_normal(10000).astype(np.float32)
    x *= np.repeat(rng.uniform(0.2, 1.0, 10), 1000).astype(np.float32)  # some structure over time
    y = lfilter([1.0, -0.9], [1.0], x).astype(np.float32)  # pre-emphasis: tilts the spectrum
    batch = torch.from_numpy(np.stack([x, y]))
    change = {}
    for mode in ("example", "frequency"):
        f = create_features("stft", normalise=mode)(batch)[:, 0, 10:-10, 2:-2]  # skip edge bins and frames
        change[mode] = float((f[0] - f[1]).abs().mean())
    assert change["frequency"] < 0.25 * change["example"]
    with pytest.raises(ConfigError, match="unknown normalisation"):
        create_features("stft", normalise="device")(batch)
