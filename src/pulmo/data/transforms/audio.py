"""Waveform augmentations: background noise of real-world kinds, mixed at a chosen SNR.

All functions work on 1-D ``float32`` NumPy arrays and take an explicit
``np.random.Generator``; nothing touches a global random state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

NoiseMaker = Callable[[int, int, np.random.Generator], np.ndarray]


def power(x: np.ndarray) -> float:
    """Mean square of ``x`` (float64)."""
    return float(np.mean(np.square(x, dtype=np.float64)))


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """``10 log10(P_signal / P_noise)`` in dB."""
    return 10.0 * np.log10(power(signal) / power(noise))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, target_snr_db: float) -> np.ndarray:
    """``signal + g * noise`` with ``g`` chosen so that the SNR over the clip is ``target_snr_db``.

    ``noise`` must be at least as long as ``signal`` (it is cropped from its start).

    Raises:
        ValueError: silent signal or noise, or noise shorter than the signal.
    """
    if len(noise) < len(signal):
        raise ValueError(f"noise ({len(noise)} samples) is shorter than the signal ({len(signal)})")
    noise = noise[: len(signal)]
    ps, pn = power(signal), power(noise)
    if ps <= 0 or pn <= 0:
        raise ValueError("cannot mix at an SNR when the signal or the noise is silent")
    gain = np.sqrt(ps / (pn * 10.0 ** (target_snr_db / 10.0)))
    return (signal + gain * noise).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / max(np.sqrt(power(x)), 1e-12)).astype(np.float32)


def _lowpass(x: np.ndarray, cutoff_hz: float, sr: int, order: int = 4) -> np.ndarray:
    return sosfilt(butter(order, min(cutoff_hz, 0.45 * sr), btype="lowpass", fs=sr, output="sos"), x)


def _slow_envelope(n: int, sr: int, rate_hz: float, depth: float, rng: np.random.Generator) -> np.ndarray:
    """A random positive envelope varying at about ``rate_hz``, between ``1 - depth`` and 1."""
    knots = max(int(n / sr * rate_hz) + 2, 2)
    env = np.interp(np.arange(n), np.linspace(0, n - 1, knots), rng.random(knots))
    return 1.0 - depth + depth * env


def appliance_hum(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (50 or 60 Hz and harmonics below Nyquist) over a faint broadband floor."""
    t = np.arange(n) / sr
    f0 = rng.choice([50.0, 60.0])
    x = sum((0.6 ** k) * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 2 * np.pi))
            for k in range(8) if f0 * (k + 1) < sr / 2)
    return _unit(x + 0.05 * rng.standard_normal(n))


def fan(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Fan: low-passed broadband noise plus a blade-pass tone (20-60 Hz) and harmonics."""
    t = np.arange(n) / sr
    blade = rng.uniform(20, 60)
    tone = sum(np.sin(2 * np.pi * blade * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    broad = _lowpass(rng.standard_normal(n), rng.uniform(300, 900), sr)
    return _unit(_unit(broad) + 0.5 * _unit(tone))


def traffic(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Traffic: brown (integrated) noise, low-passed, with passing-vehicle swells (0.05-0.2 Hz)."""
    brown = np.cumsum(rng.standard_normal(n))
    brown = brown - _lowpass(brown, 5.0, sr, order=2)  # remove the random walk's drift
    x = _lowpass(brown, 400.0, sr) * _slow_envelope(n, sr, rng.uniform(0.05, 0.2), 0.8, rng)
    return _unit(x)


def wind(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Wind: low-frequency rumble with random gusts (0.1-1 Hz)."""
    x = _lowpass(rng.standard_normal(n), rng.uniform(80, 250), sr)
    return _unit(x * _slow_envelope(n, sr, rng.uniform(0.1, 1.0), 0.9, rng) ** 2)


def babble(n: int, sr: int, rng: np.random.Generator, talkers: int = 4) -> np.ndarray:
    """Speech-like babble: glottal pulse trains (85-255 Hz) through two random formant
    resonators, modulated at syllable rate (3-6 Hz), summed over ``talkers``."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for _ in range(talkers):
        f0 = rng.uniform(85, 255) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * t))
        pulses = (np.diff(np.floor(np.cumsum(f0) / sr), prepend=0) > 0).astype(float)
        voice = pulses
        for _f in range(2):
            fc, bw = rng.uniform(250, min(2500, 0.4 * sr)), rng.uniform(60, 150)
            r = np.exp(-np.pi * bw / sr)
            voice = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * fc / sr), r * r], voice)
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi)), 0, None)
        out += _unit(voice) * syllables
    return _unit(out)


NOISE_TYPES: dict[str, NoiseMaker] = {
    "hum": appliance_hum,
    "fan": fan,
    "traffic": traffic,
    "wind": wind,
    "babble": babble,
}


def make_noise(kind: str, n: int, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of unit-power background noise of ``kind`` (one of :data:`NOISE_TYPES`)."""
    if kind not in NOISE_TYPES:
        raise ValueError(f"unknown noise type {kind!r}; known: {sorted(NOISE_TYPES)}")
    return NOISE_TYPES[kind](n, sample_rate_hz, rng)
