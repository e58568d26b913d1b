"""Classic respiratory-rate estimator: band-limited breath envelope + harmonic-sum spectrum.

1. Band-pass the audio to the breath-sound band (default 200-800 Hz, capped below Nyquist).
2. Envelope: log RMS in frames at ``envelope_hz`` (10 per second), band-passed to
   0.05-3 Hz (harmonics of rates up to 60 per minute survive; drift is removed).
3. Envelope spectrum (Hann window, zero-padded); the harmonic sum
   ``S(f) = sum_h d^(h-1) P(hf), h = 1..H`` peaks at the breathing rate even when inhalation
   and exhalation make two bursts per breath (the plain spectral peak then sits at twice
   the rate, and the autocorrelation peak often at half of it). The decay ``d < 1`` keeps
   a sub-harmonic (``f/2``, ``f/3``) from winning when the higher harmonics are weak.
4. The rate is the argmax of ``S`` within ``[min_bpm, max_bpm]``.

:func:`three_halves_check` corrects the harmonic sum's one systematic slip on paced
breathing: a peak at two thirds of the rate (``f' = 2f/3`` collects ``P(3f') = P(2f)``).
It compares the periodicity of per-band envelopes at one breath of each candidate; in
several bands, inhalation and exhalation differ in colour, so a lag that maps an inhalation
onto an inhalation correlates more than one that does not.

``method="autocorrelation"`` (the shortest-lag normalised autocorrelation peak within 80 %
of the highest one in the lag range)
and ``method="spectral_peak"`` (plain envelope-spectrum peak) are kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, find_peaks, sosfiltfilt

METHODS = ("harmonic_sum", "autocorrelation", "spectral_peak")


@dataclass
class DspConfig:
    """Parameters of :func:`estimate_rate_dsp` (frequencies in Hz, rates in breaths per minute)."""

    band_low_hz: float = 200.0
    band_high_hz: float = 800.0
    envelope_hz: int = 10
    min_bpm: float = 4.0
    max_bpm: float = 60.0
    harmonics: int = 3
    harmonic_decay: float = 1.0
    method: str = "harmonic_sum"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown DSP method {self.method!r}; known: {list(METHODS)}")
        if not 0 < self.min_bpm < self.max_bpm:
            raise ValueError("need 0 < min_bpm < max_bpm")


def breath_envelope(samples: np.ndarray, sample_rate_hz: int, cfg: DspConfig) -> np.ndarray:
    """``(T,)`` audio -> ``(T * envelope_hz / sample_rate_hz,)`` zero-mean log-RMS envelope."""
    high = min(cfg.band_high_hz, 0.45 * sample_rate_hz)
    sos = butter(4, [cfg.band_low_hz, high], btype="bandpass", fs=sample_rate_hz, output="sos")
    y = sosfiltfilt(sos, samples.astype(np.float64))
    hop = sample_rate_hz // cfg.envelope_hz
    n = len(y) // hop
    if n < 8:
        raise ValueError(f"audio too short for the envelope ({len(samples) / sample_rate_hz:.2f} s)")
    rms = np.sqrt(np.square(y[: n * hop]).reshape(n, hop).mean(axis=1))
    env = np.log(rms + 1e-8 * (rms.max() + 1e-12))
    slow = butter(2, [0.05, min(3.0, 0.45 * cfg.envelope_hz)], btype="bandpass", fs=cfg.envelope_hz, output="sos")
    env = sosfiltfilt(slow, env, padlen=min(3 * 5, n - 1))
    return env - env.mean()


def _spectrum(env: np.ndarray, fr: int) -> tuple[np.ndarray, np.ndarray]:
    nfft = max(16384, len(env))
    p = np.abs(np.fft.rfft(env * np.hanning(len(env)), nfft)) ** 2
    return np.fft.rfftfreq(nfft, 1.0 / fr) * 60.0, p


def rate_from_envelope(env: np.ndarray, cfg: DspConfig) -> float:
    """Breathing rate (bpm) of a zero-mean envelope sampled at ``cfg.envelope_hz``."""
    fr = cfg.envelope_hz
    if cfg.method == "autocorrelation":
        n = len(env)
        ac = np.correlate(env, env, "full")[n - 1 :] / np.arange(n, 0, -1)
        ac = ac / max(ac[0], 1e-12)
        lo = max(int(fr * 60 / cfg.max_bpm), 1)
        hi = min(int(fr * 60 / cfg.min_bpm), int(0.75 * n))
        seg = ac[lo : hi + 1]
        peaks, _ = find_peaks(seg)
        if len(peaks) == 0:  # no periodicity visible in the lag range: fall back to the spectrum
            return rate_from_envelope(env, DspConfig(**{**cfg.__dict__, "method": "harmonic_sum"}))
        # multiples of the period peak about as high: take the first peak near the highest
        k = peaks[np.argmax(seg[peaks] >= 0.8 * seg[peaks].max())] + lo
        a, b, c = ac[k - 1], ac[k], ac[k + 1] if k + 1 < n else ac[k]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
        return float(60.0 * fr / (k + shift))
    f, score = rate_spectrum(env, cfg)
    band = (f >= cfg.min_bpm) & (f <= cfg.max_bpm)
    return float(f[band][np.argmax(score[band])])


def rate_spectrum(env: np.ndarray, cfg: DspConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(rates_bpm, score)`` of an envelope: the plain power spectrum for
    ``spectral_peak``, else the decayed harmonic sum."""
    f, p = _spectrum(env, cfg.envelope_hz)
    if cfg.method == "spectral_peak":
        return f, p
    return f, sum(cfg.harmonic_decay ** (h - 1) * np.interp(f * h, f, p, right=0.0) for h in range(1, cfg.harmonics + 1))


def harmonic_sum_spectrum(samples: np.ndarray, sample_rate_hz: int, cfg: DspConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(rates_bpm, score)``: the harmonic-sum spectrum of the recording's breath envelope
    (whatever ``cfg.method`` says), what a network's coarse estimate is matched against."""
    return rate_spectrum(breath_envelope(samples, sample_rate_hz, cfg), DspConfig(**{**cfg.__dict__, "method": "harmonic_sum"}))


def refine_rate(samples: np.ndarray, sample_rate_hz: int, guess_bpm: float, tolerance: float,
                cfg: DspConfig | None = None, min_peak: float = 0.05) -> float:
    """Sharpen a coarse rate (e.g. a neural estimate) with the harmonic-sum spectrum.

    The spectrum's local peaks within ``guess_bpm * (1 ± tolerance)`` (and the rate range)
    that reach ``min_peak`` of the strongest peak in the rate range are candidates; the
    strongest candidate is returned, or ``guess_bpm`` when there is none. The
    guess resolves the octave ambiguity the spectrum has; the spectrum gives the precision
    a short-window estimate lacks. ``tolerance <= 0`` returns the guess unchanged.
    """
    if tolerance <= 0:
        return float(guess_bpm)
    cfg = cfg or DspConfig()
    f, score = harmonic_sum_spectrum(samples, sample_rate_hz, cfg)
    band = (f >= cfg.min_bpm) & (f <= cfg.max_bpm)
    peaks, _ = find_peaks(score, height=min_peak * score[band].max())
    ok = peaks[(np.abs(f[peaks] - guess_bpm) <= tolerance * guess_bpm) & (f[peaks] >= cfg.min_bpm) & (f[peaks] <= cfg.max_bpm)]
    return float(f[ok[np.argmax(score[ok])]]) if len(ok) else float(guess_bpm)


def posterior_rate(samples: np.ndarray, sample_rate_hz: int, distribution: np.ndarray, bins_bpm: np.ndarray,
                   weight: float, max_bpm: float = 30.0, cfg: DspConfig | None = None) -> float:
    """The envelope-spectrum peak that a network's rate distribution and the spectrum agree on.

    Candidates are the local peaks of the harmonic-sum spectrum between ``cfg.min_bpm`` and
    ``max_bpm`` (the cap of :func:`three_halves_check`); each scores
    ``log p(c) + weight * log(S(c) / S_max)``, ``p`` the ``(K,)`` ``distribution`` over the
    ``(K,)`` log-spaced ``bins_bpm`` (interpolated in log-rate), ``S_max`` the strongest peak
    in range. The distribution chooses the octave, the spectrum gives the precision;
    ``weight`` trades one against the other. Returns the best candidate (bpm), or the
    distribution's mode when the range holds no peak.
    """
    cfg = cfg or DspConfig()
    f, score = harmonic_sum_spectrum(samples, sample_rate_hz, cfg)
    band = (f >= cfg.min_bpm) & (f <= max_bpm)
    peaks, _ = find_peaks(score)
    peaks = peaks[band[peaks]]
    if len(peaks) == 0:
        return float(bins_bpm[int(np.argmax(distribution))])
    c = f[peaks]
    log_p = np.interp(np.log(c), np.log(bins_bpm), np.log(np.asarray(distribution, float) + 1e-12))
    return float(c[np.argmax(log_p + weight * np.log(score[peaks] / score[band].max()))])


PERIODICITY_BANDS_HZ = ((100.0, 200.0), (200.0, 400.0), (400.0, 700.0), (700.0, 1000.0))


def band_envelopes(samples: np.ndarray, sample_rate_hz: int, bands: tuple[tuple[float, float], ...] = PERIODICITY_BANDS_HZ,
                   envelope_hz: int = 10) -> np.ndarray:
    """``(T,)`` audio -> ``(B, T * envelope_hz / sample_rate_hz)``: the :func:`breath_envelope`
    of each band (Hz) that starts below 0.4 x the sample rate, each scaled to unit variance."""
    usable = [(lo, hi) for lo, hi in bands if lo < 0.4 * sample_rate_hz]
    if not usable:
        raise ValueError(f"no envelope band lies below {0.4 * sample_rate_hz:.0f} Hz")
    envs = [breath_envelope(samples, sample_rate_hz, DspConfig(band_low_hz=lo, band_high_hz=hi, envelope_hz=envelope_hz))
            for lo, hi in usable]
    return np.array([e / (e.std() + 1e-12) for e in envs])


def envelope_periodicity(envelopes: np.ndarray, bpm: float, envelope_hz: int = 10) -> float:
    """Mean over bands of the normalised autocorrelation of ``(B, N)`` envelopes at the lag
    of one breath at ``bpm`` (linear between whole frames); ``nan`` when fewer than 10 frames
    would overlap."""
    lag = 60.0 * envelope_hz / bpm
    k0 = int(np.floor(lag))
    if k0 < 1 or k0 + 1 > envelopes.shape[1] - 10:
        return float("nan")
    vals = []
    for k in (k0, k0 + 1):
        a, b = envelopes[:, :-k], envelopes[:, k:]
        vals.append(float(((a * b).mean(1) / np.sqrt((a * a).mean(1) * (b * b).mean(1) + 1e-12)).mean()))
    frac = lag - k0
    return (1 - frac) * vals[0] + frac * vals[1]


def three_halves_check(samples: np.ndarray, sample_rate_hz: int, rate_bpm: float, margin: float = 0.0,
                       max_bpm: float = 30.0) -> float:
    """``rate_bpm``, or the envelope-spectrum peak near 1.5 x it (within ± 10 %) when the band
    envelopes are more periodic at one breath of 1.5 x ``rate_bpm`` than at one breath of
    ``rate_bpm`` by more than ``margin``, and 1.5 x ``rate_bpm`` stays within ``max_bpm``."""
    up = 1.5 * rate_bpm
    if up > max_bpm:
        return float(rate_bpm)
    env = band_envelopes(samples, sample_rate_hz)
    if envelope_periodicity(env, up) > envelope_periodicity(env, rate_bpm) + margin:  # nan compares False
        return refine_rate(samples, sample_rate_hz, up, 0.1)
    return float(rate_bpm)


def estimate_rate_dsp(samples: np.ndarray, sample_rate_hz: int, cfg: DspConfig | None = None) -> float:
    """Breathing rate in breaths per minute of a 1-D clip (see the module docstring)."""
    cfg = cfg or DspConfig()
    return rate_from_envelope(breath_envelope(samples, sample_rate_hz, cfg), cfg)
