"""Air-microphone clips for training and validating the rate networks, and band limits.

The networks hear audio at their working rate (2 kHz). Air-microphone breathing from the
simulator (:mod:`pulmo.data.adapters.synthetic_air`) is rendered at its own sample rate
(8-48 kHz, with its codec, gate and room) and resampled to the working rate, as the pipeline
does with a real file. :func:`band_limit` makes band-limited copies of any clip (real or
simulated): a random high-pass and low-pass corner, as a phone, an earbud port or a codec
would leave it.

Settings groups (``SETTING_GROUPS``): training clips come from ``train``, validation clips
from ``val`` (other sample rates, other room noise), so the network's epoch and
post-processing are chosen on conditions it never trained on; ``test`` stays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from scipy.signal import butter, sosfilt

from pulmo.data.adapters.synthetic_air import draw_settings, synth_air


@dataclass
class AirTrainingClip:
    """One simulated clip at the working rate: samples ``(T,)`` float32, rate (bpm), noisy flag."""

    samples: np.ndarray
    rate_bpm: float
    noisy: bool


def air_clip(seconds: float, rate_bpm: float, group: str, sample_rate_hz: int, rng: np.random.Generator,
             noisy_below_snr_db: float = 20.0) -> AirTrainingClip:
    """A clip of ``group``'s settings at ``rate_bpm``, rendered at its own rate and resampled to
    ``sample_rate_hz``; noisy when its SNR is below ``noisy_below_snr_db``."""
    s = draw_settings(rng, group, rate_bpm)
    clip = synth_air(seconds, rate_bpm, s, rng)
    x = soxr.resample(clip.audio, s.sample_rate_hz, sample_rate_hz).astype(np.float32)
    return AirTrainingClip(x, rate_bpm, s.snr_db is not None and s.snr_db < noisy_below_snr_db)


def draw_rate(rng: np.random.Generator, none_share: float = 0.05) -> float:
    """0 (no breathing) with ``none_share``, else log-uniform 4-60 bpm (bpm)."""
    return 0.0 if rng.random() < none_share else float(np.exp(rng.uniform(np.log(4.0), np.log(60.0))))


def air_bank(n: int, seconds: float, sample_rate_hz: int, rng: np.random.Generator,
             noisy_below_snr_db: float = 20.0) -> list[AirTrainingClip]:
    """``n`` training clips (settings group ``train``), cropped at random while training."""
    return [air_clip(seconds, draw_rate(rng), "train", sample_rate_hz, rng, noisy_below_snr_db) for _ in range(n)]


def air_validation_clips(n: int, seconds: float, sample_rate_hz: int, seed: int,
                         noisy_below_snr_db: float = 20.0) -> list[AirTrainingClip]:
    """``n`` validation clips (settings group ``val``, its own ``seed``), rates log-uniform 4-60 bpm."""
    rng = np.random.default_rng(seed)
    return [air_clip(seconds, draw_rate(rng, none_share=0.0), "val", sample_rate_hz, rng, noisy_below_snr_db)
            for _ in range(n)]


def band_limit(x: np.ndarray, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """``(T,)`` -> ``(T,)`` float32 through a 2nd-order high-pass at 50-500 Hz and, half the
    time, a 4th-order low-pass between 1.2x that corner and 0.45x the rate (log-uniform corners)."""
    nyq = 0.5 * sample_rate_hz
    lo = float(np.exp(rng.uniform(np.log(50.0), np.log(500.0))))
    y = sosfilt(butter(2, lo, "highpass", fs=sample_rate_hz, output="sos"), x)
    if rng.random() < 0.5 and 1.2 * lo < 0.9 * nyq:
        hi = float(np.exp(rng.uniform(np.log(1.2 * lo), np.log(0.9 * nyq))))
        y = sosfilt(butter(4, hi, "lowpass", fs=sample_rate_hz, output="sos"), y)
    return np.asarray(y, np.float32)


__all__ = ["AirTrainingClip", "air_bank", "air_clip", "air_validation_clips", "band_limit", "draw_rate"]
