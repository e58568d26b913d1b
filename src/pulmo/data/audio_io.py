"""Audio loading and the paper's preprocessing: mono, resample, band-pass, pad/crop.

All functions work on 1-D ``float32`` NumPy arrays of samples in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import butter, sosfiltfilt

from pulmo.errors import DataError


def read_audio(path: str | Path, start_s: float = 0.0, end_s: float | None = None) -> tuple[np.ndarray, int]:
    """Read ``[start_s, end_s)`` of a file as mono float32.

    Multi-channel audio is mixed down by averaging channels.

    Returns:
        ``(samples, sample_rate_hz)``; samples has shape ``(T,)``.

    Raises:
        DataError: unreadable, empty, non-finite, or a stretch outside the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
        first = int(round(start_s * info.samplerate))
        last = info.frames if end_s is None else int(round(end_s * info.samplerate))
        if first < 0 or first >= info.frames or last <= first:
            raise DataError(
                f"{path}: requested {start_s}-{end_s} s lies outside the audio (0-{info.frames / info.samplerate:.3f} s)"
            )
        data, sr = sf.read(str(path), start=first, stop=min(last, info.frames), dtype="float32", always_2d=True)
    except DataError:
        raise
    except Exception as err:  # soundfile/libsndfile raise several types for bad files
        raise DataError(f"cannot read audio {path}: {err}") from None
    if data.shape[0] == 0:
        raise DataError(f"audio file is empty: {path}")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise DataError(f"audio contains NaN or infinite samples: {path}")
    return np.ascontiguousarray(mono, dtype=np.float32), int(sr)


def resample(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """High-quality resampling (soxr); a no-op when the rates match."""
    if from_hz == to_hz:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, from_hz, to_hz, quality="HQ").astype(np.float32, copy=False)


def band_pass(samples: np.ndarray, sample_rate_hz: int, low_hz: float, high_hz: float, order: int = 5) -> np.ndarray:
    """Zero-phase Butterworth band-pass (forward-backward, so the magnitude order doubles).

    An upper edge at or above Nyquist cannot be designed; the filter then becomes a
    high-pass at ``low_hz`` (the resampler has already removed content above Nyquist).
    A zero ``low_hz`` likewise becomes a low-pass.
    """
    nyquist = sample_rate_hz / 2
    high_ok = high_hz < nyquist
    if low_hz > 0 and high_ok:
        sos = butter(order, [low_hz, high_hz], btype="bandpass", fs=sample_rate_hz, output="sos")
    elif low_hz > 0:
        sos = butter(order, low_hz, btype="highpass", fs=sample_rate_hz, output="sos")
    elif high_ok:
        sos = butter(order, high_hz, btype="lowpass", fs=sample_rate_hz, output="sos")
    else:
        return samples
    padlen = min(3 * (2 * len(sos) + 1), len(samples) - 1)
    if padlen < 1:
        return samples
    return sosfiltfilt(sos, samples, padlen=padlen).astype(np.float32)


def fix_length(
    samples: np.ndarray, n: int, start: int | None = 0, rng: np.random.Generator | None = None, pad: str = "zero"
) -> np.ndarray:
    """Crop or pad to exactly ``n`` samples.

    Longer input is cropped from ``start``; with ``start=None`` a random start is drawn
    from ``rng`` (training). Shorter input is padded at the end: ``pad="zero"`` with
    zeros, ``pad="repeat"`` by repeating the input from its start (RespireNet's padding,
    which keeps the cycle's own sound in the whole window instead of silence).
    """
    if len(samples) >= n:
        if start is None:
            if rng is None:
                raise ValueError("a random crop needs rng")
            start = int(rng.integers(0, len(samples) - n + 1))
        start = min(start, len(samples) - n)
        return samples[start : start + n]
    if pad == "repeat" and len(samples) > 0:
        return np.resize(samples, n).astype(np.float32, copy=False)
    if pad not in ("zero", "repeat"):
        raise ValueError(f"unknown pad mode {pad!r}; known: zero, repeat")
    out = np.zeros(n, dtype=np.float32)
    out[: len(samples)] = samples
    return out
