"""The air band: what kind of microphone made a recording, and a rate estimator that keeps the
band where air-flow noise lives.

The networks were trained on stethoscope audio at 2 kHz. A phone, earbud or nose microphone
records breathing through the air: turbulent flow noise from a few hundred Hz to several kHz,
most of which resampling to 2 kHz throws away. :func:`high_band_share` measures how much of a
recording's power lies above 1 kHz (the front door's air-microphone measure, recomputed here
so the rate pipeline decides for itself); :func:`estimate_rate_air` is a harmonic-sum DSP
estimator (:mod:`pulmo.resp_rate.dsp`) on log band envelopes up to the input's Nyquist
(:mod:`pulmo.features.band_envelope`): each band's envelope spectrum is weighted by how
periodic that band is, so whichever band carries the breath (nasal low band, mouth-jet high
band, the stethoscope's 100-800 Hz) leads, and bands holding only room noise fall silent.
:func:`air_rule_rate` makes an air recording's rate from the members (this estimator, networks
trained for air audio, the baseline) by the rule a checkpoint names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfiltfilt, welch

from pulmo.features.band_envelope import band_envelopes_np
from pulmo.resp_rate.dsp import DspConfig, rate_spectrum

ENVELOPE_HZ = 10  # band envelopes' frame rate (frames per second)


def high_band_share(samples: np.ndarray, sample_rate_hz: int, split_hz: float = 1000.0) -> float:
    """Share of the 100 Hz - min(8 kHz, 0.45 x rate) power above ``split_hz`` (0-1), from a
    Welch spectrum of ``(T,)`` audio; 0 where the rate leaves no band above ``split_hz``."""
    top = min(8000.0, 0.45 * sample_rate_hz)
    if top <= split_hz:
        return 0.0
    f, p = welch(np.asarray(samples, np.float64), fs=sample_rate_hz, nperseg=min(len(samples), max(64, sample_rate_hz // 4)))
    wide = (f >= 100) & (f <= top)
    total = p[wide].sum()
    return float(p[wide & (f >= split_hz)].sum() / total) if total > 0 else 0.0


@dataclass
class AirDspConfig:
    """:func:`estimate_rate_air` settings. The defaults (lower edge 300 Hz, plain mean of the bands'
    spectra, median of 20 s window rates) were chosen among 18 (lower edge 100/200/300 Hz,
    sharpen 0/2/4, whole/median) by the lowest MAE on the simulator's validation settings
    (``benchmarks/resp_rate_air.py``; docs/respiratory-rate.md, "Through the air").

    ``n_bands`` log-spaced bands from ``fmin_hz`` to
    ``min(fmax_hz, 0.45 x rate)``; rates within ``[min_bpm, max_bpm]``; harmonic sum of
    ``harmonics`` terms with ``harmonic_decay``; band weights ``periodicity ** sharpen``
    (0 = plain mean of the bands' spectra); ``window_s``/``hop_s``: windows for the interval."""

    n_bands: int = 8
    fmin_hz: float = 300.0
    fmax_hz: float = 12000.0
    min_bpm: float = 4.0
    max_bpm: float = 60.0
    harmonics: int = 3
    harmonic_decay: float = 1.0
    sharpen: float = 0.0
    window_s: float = 20.0
    hop_s: float = 5.0
    aggregate: str = "median"  # "whole": the whole recording's spectrum; "median": the median of the window rates


def _detrended(env: np.ndarray) -> np.ndarray:
    """Zero-mean envelope band-passed to 0.05-3 Hz (rates up to 60 bpm and their second harmonic)."""
    sos = butter(2, [0.05, 3.0], btype="bandpass", fs=ENVELOPE_HZ, output="sos")
    out = sosfiltfilt(sos, env, padlen=min(15, len(env) - 1))
    return out - out.mean()


def band_spectra(logs: np.ndarray, cfg: AirDspConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log band envelopes ``(B, N)`` at :data:`ENVELOPE_HZ` -> ``(rates_bpm (K,), per-band
    harmonic-sum spectra (B, K) each scaled to peak 1, periodicity (B,))``.

    Periodicity of a band: its spectrum's highest peak in the rate range over its mean there
    (1 = flat, no rhythm). Bands with a constant envelope (digital silence, nothing there)
    get periodicity 0."""
    if logs.shape[1] < 16:
        raise ValueError(f"audio too short for band envelopes ({logs.shape[1] / ENVELOPE_HZ:.1f} s)")
    dsp = DspConfig(envelope_hz=ENVELOPE_HZ, min_bpm=cfg.min_bpm, max_bpm=cfg.max_bpm, harmonics=cfg.harmonics,
                    harmonic_decay=cfg.harmonic_decay)
    spectra, score = [], []
    f = np.zeros(0)
    for env in logs:
        env = _detrended(env)
        f, s = rate_spectrum(env, dsp)
        band = (f >= cfg.min_bpm) & (f <= cfg.max_bpm)
        peak = s[band].max()
        if not np.isfinite(peak) or peak <= 1e-12 or env.std() < 1e-9:
            spectra.append(np.zeros_like(s))
            score.append(0.0)
            continue
        spectra.append(s / peak)
        score.append(float(peak / s[band].mean()))
    return f, np.array(spectra), np.array(score)


def rate_from_bands(f: np.ndarray, spectra: np.ndarray, score: np.ndarray, cfg: AirDspConfig) -> tuple[float, float]:
    """``(rate_bpm, periodicity)``: the peak of the periodicity-weighted mean spectrum; NaN
    rate where no band has any rhythm."""
    if not np.any(score > 0):
        return float("nan"), 0.0
    w = np.where(score > 0, score, 0.0) ** cfg.sharpen if cfg.sharpen > 0 else (score > 0).astype(float)
    combined = (w[:, None] * spectra).sum(0) / w.sum()
    band = (f >= cfg.min_bpm) & (f <= cfg.max_bpm)
    i = np.argmax(combined[band])
    return float(f[band][i]), float(combined[band][i] / combined[band].mean())


@dataclass
class AirEstimate:
    """A recording's air-band rate (bpm), its periodicity (peak over mean of the combined
    spectrum; higher = clearer rhythm) and the rates of ``window_s`` windows every ``hop_s``
    (``(W,)``, the whole recording once when shorter)."""

    rate_bpm: float
    periodicity: float
    window_rates_bpm: np.ndarray
    window_starts_s: np.ndarray


def estimate_rate_air(samples: np.ndarray, sample_rate_hz: int, cfg: AirDspConfig | None = None) -> AirEstimate:
    """Breathing rate of ``(T,)`` audio at any rate from 2 to 48 kHz (see the module docstring)."""
    cfg = cfg or AirDspConfig()
    logs, _ = band_envelopes_np(samples, sample_rate_hz, cfg.n_bands, cfg.fmin_hz, cfg.fmax_hz)
    return estimate_from_envelopes(logs, cfg)


def estimate_from_envelopes(logs: np.ndarray, cfg: AirDspConfig) -> AirEstimate:
    """:func:`estimate_rate_air` from log band envelopes ``(B, N)`` at :data:`ENVELOPE_HZ`."""
    rate, periodicity = rate_from_bands(*band_spectra(logs, cfg), cfg)
    n, win, hop = logs.shape[1], int(cfg.window_s * ENVELOPE_HZ), int(cfg.hop_s * ENVELOPE_HZ)
    starts = list(range(0, n - win + 1, hop)) if n >= win + hop else [0]
    rates = np.array([rate] if len(starts) == 1 else
                     [rate_from_bands(*band_spectra(logs[:, a: a + win], cfg), cfg)[0] for a in starts])
    if cfg.aggregate == "median" and np.isfinite(rates).any():
        rate = float(np.nanmedian(rates))
    return AirEstimate(rate, periodicity, rates, np.array(starts, float) / ENVELOPE_HZ)


def air_doubt(estimate: AirEstimate, baseline_bpm: float) -> float:
    """Doubt of an air-band rate (natural-log units, 0 = none): the spread of its window rates
    (IQR / median) plus ``|ln(rate / baseline_bpm)|``, its disagreement with the
    stethoscope-band harmonic-sum baseline (:func:`pulmo.resp_rate.dsp.estimate_rate_dsp`)."""
    rates = estimate.window_rates_bpm[np.isfinite(estimate.window_rates_bpm)]
    if not len(rates) or not np.isfinite(estimate.rate_bpm):
        return float("inf")
    q1, med, q3 = np.percentile(rates, [25, 50, 75])
    return float((q3 - q1) / max(med, 1.0) + abs(np.log(max(estimate.rate_bpm, 1.0) / max(baseline_bpm, 1.0))))


def doubt_threshold(validation_doubts: list[float], coverage: float = 0.9) -> float:
    """The ``coverage`` quantile of validation doubts (about 10 % flagged)."""
    return float(np.quantile(np.asarray(validation_doubts, float), coverage))


def networks_doubt(networks_bpm: float, air_band_bpm: float) -> float:
    """Doubt of the air-trained networks' rate (natural-log units, 0 = none): how far it is
    from the air-band DSP's, ``|ln(networks / air band)|`` (rates below 1 bpm count as 1)."""
    return float(abs(np.log(max(networks_bpm, 1.0) / max(air_band_bpm, 1.0))))


#: Air-band rates whose :func:`air_doubt` exceeds this are flagged uncertain: the 90th
#: percentile on the simulator's validation settings (``benchmarks/resp_rate_air.py``).
AIR_DOUBT_ABOVE = 1.131
#: The air-trained networks' rates whose :func:`networks_doubt` exceeds this are flagged
#: uncertain: the 90th percentile on the same validation clips (``benchmarks/resp_rate_air.py``).
NETWORKS_DOUBT_ABOVE = 0.459


def air_uncertain(rule: str, members: dict[str, float], estimate: AirEstimate, baseline_bpm: float) -> bool:
    """Whether the rate ``rule`` makes (:func:`air_rule_rate`) is in doubt: for ``air_networks``
    when they disagree with the air-band DSP (:func:`networks_doubt`), otherwise the air-band
    DSP's own doubt (:func:`air_doubt`)."""
    if rule == "air_networks":
        return networks_doubt(members["air_networks"], members["dsp_air_band"]) > NETWORKS_DOUBT_ABOVE
    return air_doubt(estimate, baseline_bpm) > AIR_DOUBT_ABOVE


#: How the pipeline makes an air-microphone recording's rate from its members' rates (bpm):
#: the air-band DSP's, the networks trained for air audio, or the median of those two and the
#: stethoscope-band baseline. A checkpoint names its rule (``air.rule``, chosen on the
#: simulator's validation settings by ``benchmarks/resp_rate_air.py``); without one, ``air_dsp``.
AIR_RULES: tuple[str, ...] = ("air_dsp", "air_networks", "median")


def air_rule_rate(rule: str, members: dict[str, float]) -> float:
    """The rate ``rule`` (one of :data:`AIR_RULES`) makes of ``members`` (bpm by name:
    ``dsp_air_band``, ``air_networks``, ``dsp_stethoscope_band``; the median takes those present,
    the baseline being absent where the audio is too short for it); a member the rule needs
    and lacks raises ``KeyError``."""
    if rule == "air_dsp":
        return members["dsp_air_band"]
    if rule == "air_networks":
        return members["air_networks"]
    if rule == "median":
        baseline = [members["dsp_stethoscope_band"]] if "dsp_stethoscope_band" in members else []
        return float(np.median([members["air_networks"], members["dsp_air_band"], *baseline]))
    raise ValueError(f"unknown air rule {rule!r}; one of {AIR_RULES}")


#: The pipeline reads audio for the air front end at the file's rate, at most this (Hz): the
#: air band up to 7.2 kHz, as the front door measures it.
WIDE_RATE_HZ = 16000
#: Recorded at 8 kHz or more with at least this share of the 100 Hz-8 kHz power above 3 kHz
#: (-40 dB), audio is air-microphone breathing. Chosen on validation: RRuJO's fold-0 validation
#: subjects resampled to 8/16/44.1 kHz and written as 16-bit FLAC (stethoscope audio stored at
#: a higher rate: quantisation noise and clipping put up to 8.3e-5 there) against 60
#: simulated clips of the validation settings written the same way (5th percentile 2.1e-4;
#: 2 of 60, nasal breathing at 8 kHz, fall below and go to the networks). A first threshold of
#: 1e-8 (float audio) sent 40-49 of 50 RRuJO test recordings stored at 8-44.1 kHz to the air
#: band. The front door's share above 1 kHz (0.35) is not used: RRuJO's 4.5 kHz stethoscope
#: reaches 0.86 there.
AIR_TOP_SHARE = 1e-4
AIR_MIN_NATIVE_HZ = 8000


def front_end(samples: np.ndarray, sample_rate_hz: int, native_rate_hz: int) -> tuple[str, dict[str, float]]:
    """``("air" | "stethoscope", measurements)`` for ``(T,)`` audio at ``sample_rate_hz`` read
    from a file recorded at ``native_rate_hz``: air where the file was recorded at
    :data:`AIR_MIN_NATIVE_HZ` or more and the share of power above 3 kHz reaches :data:`AIR_TOP_SHARE`."""
    share = high_band_share(samples, sample_rate_hz)
    top = high_band_share(samples, sample_rate_hz, 3000.0)
    air = native_rate_hz >= AIR_MIN_NATIVE_HZ and top >= AIR_TOP_SHARE
    return ("air" if air else "stethoscope"), {"share_above_1khz": share, "share_above_3khz": top}
