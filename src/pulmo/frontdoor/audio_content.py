"""What an audio file holds, measured before any model sees it: level, silence, clipping,
tones, stationary noise, and where its energy lies (stethoscope or air microphone).

Everything here works on mono float32 samples in [-1, 1] at the analysis rate
(the file's own rate, or 16 kHz for faster files: air-flow noise is judged up to 8 kHz).
The thresholds that turn these measurements into refusals and routes live in
:mod:`pulmo.frontdoor.routing`; each one is documented there with the data it was checked on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.signal import welch

ANALYSIS_RATE_HZ = 16_000  # air-microphone breath noise is judged up to 8 kHz
FRAME_S = 0.05  # frame of the level envelope (s)
SILENT_LSB = 2 / 32768  # a frame whose samples all stay within +-2 steps of 16-bit zero is digital silence
LOW_HZ = 50.0  # below this, spectra hold rumble and DC, not breath
SPLIT_HZ = 1000.0  # stethoscopes pass little above 1 kHz; air-flow noise has much of its energy there
TONE_DB = 20.0  # a spectral line stands this far above its neighbourhood's median


@dataclass(frozen=True)
class AudioContent:
    """Measurements of one recording.

    ``duration_s`` (s), ``sample_rate_hz`` (analysis rate), ``peak`` (full scale 1),
    ``rms_dbfs`` (dB re full scale, over non-silent frames), ``silent_fraction`` (share of
    50 ms frames that are digital silence), ``active_s`` (s of non-silent audio),
    ``clipped_fraction`` (share of samples at full scale), ``flatness`` (spectral flatness,
    0 tonal .. 1 white, over 50 Hz to 0.45 x rate), ``tonal_fraction`` (share of the power
    in spectral lines 20 dB over their neighbourhood), ``envelope_db_std`` (spread of the
    level over non-silent 50 ms frames, dB: stationary noise ~0.2, breathing several dB),
    ``high_band_fraction`` (share of the 100 Hz-8 kHz power above 1 kHz; None when the
    rate leaves no band above 1 kHz).
    """

    duration_s: float
    sample_rate_hz: int
    peak: float
    rms_dbfs: float
    silent_fraction: float
    active_s: float
    clipped_fraction: float
    flatness: float
    tonal_fraction: float
    envelope_db_std: float
    high_band_fraction: float | None

    def to_dict(self) -> dict[str, Any]:
        """Rounded for reports and JSON."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _frames(samples: np.ndarray, n: int) -> np.ndarray:
    """``(F, n)`` non-overlapping frames (the tail shorter than ``n`` is dropped; one frame if shorter)."""
    if len(samples) < n:
        return samples[None, :]
    return samples[: len(samples) // n * n].reshape(-1, n)


def _tonal_fraction(freqs: np.ndarray, power: np.ndarray) -> float:
    """Share of ``power`` in bins standing ``TONE_DB`` over the median of the bins within +-50 Hz
    (and their immediate neighbours, which hold a line's leakage)."""
    if len(power) < 5:
        return 0.0
    step = float(freqs[1] - freqs[0])
    half = max(2, int(round(50.0 / step)))
    logp = 10 * np.log10(power + 1e-30)
    padded = np.pad(logp, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    local = np.median(windows, axis=1)
    line = logp > local + TONE_DB
    line = line | np.roll(line, 1) | np.roll(line, -1)
    total = float(power.sum())
    return float(power[line].sum() / total) if total > 0 else 0.0


def measure(samples: np.ndarray, sample_rate_hz: int) -> AudioContent:
    """Measure ``samples`` ``(T,)`` float32 at ``sample_rate_hz`` (see :class:`AudioContent`)."""
    x = np.asarray(samples, dtype=np.float32)
    n = len(x)
    duration = n / sample_rate_hz
    peak = float(np.abs(x).max()) if n else 0.0
    frame = max(1, int(FRAME_S * sample_rate_hz))
    frames = _frames(x, frame)
    silent = np.abs(frames).max(axis=1) <= SILENT_LSB
    silent_fraction = float(silent.mean()) if len(frames) else 1.0
    active = frames[~silent]
    active_s = float(active.size / sample_rate_hz)
    if active.size:
        frame_rms = np.sqrt(np.mean(active.astype(np.float64) ** 2, axis=1))
        rms = float(np.sqrt(np.mean(frame_rms**2)))
        env_db = 20 * np.log10(frame_rms + 1e-12)
        envelope_db_std = float(np.std(env_db)) if len(env_db) > 1 else 0.0
    else:
        rms, envelope_db_std = 0.0, 0.0
    rms_dbfs = float(20 * np.log10(rms)) if rms > 0 else -np.inf
    clipped_fraction = float(np.mean(np.abs(x) >= 0.999)) if n and peak >= 0.999 else 0.0

    flatness, tonal, high = 0.0, 0.0, None
    top = 0.45 * sample_rate_hz
    nper = min(n, max(64, int(0.25 * sample_rate_hz)))
    if active.size >= 64 and nper >= 64:
        freqs, power = welch(x, fs=sample_rate_hz, nperseg=nper)
        band = (freqs >= LOW_HZ) & (freqs <= top)
        p = power[band].astype(np.float64)
        if p.size and p.sum() > 0:
            flatness = float(np.exp(np.mean(np.log(p + 1e-30))) / np.mean(p))
            tonal = _tonal_fraction(freqs[band], p)
        wide = (freqs >= 100) & (freqs <= min(top, 8000))
        hi = wide & (freqs >= SPLIT_HZ)
        if hi.any() and power[wide].sum() > 0:
            high = float(power[hi].sum() / power[wide].sum())
    return AudioContent(duration_s=duration, sample_rate_hz=int(sample_rate_hz), peak=peak, rms_dbfs=rms_dbfs,
                        silent_fraction=silent_fraction, active_s=active_s, clipped_fraction=clipped_fraction,
                        flatness=flatness, tonal_fraction=tonal, envelope_db_std=envelope_db_std,
                        high_band_fraction=high)


__all__ = ["ANALYSIS_RATE_HZ", "AudioContent", "measure"]
