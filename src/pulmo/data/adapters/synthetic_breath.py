"""Synthetic breath audio with known ground truth (tests, demos, and what real data lacks).

A breath is an inhalation burst then a quieter exhalation burst: band-limited noise under
a smooth envelope. Inhalation takes 30-45 % of each cycle (inhale:exhale ratio about
1:1.2 to 1:2.3), exhalation sits lower in frequency, and each cycle's period is jittered
(``irregularity``) then rescaled so the clip's mean rate is exactly the requested one.
Rates run from 0 (no breathing: background only) to 60 breaths per minute; the heavy
breathing class starts above ``HEAVY_ABOVE_BPM``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from pulmo.data.transforms.audio import make_noise, mix_at_snr

#: The paper's classes: none (no breathing), normal (5-30 bpm), heavy (> 30 bpm).
BREATH_CLASSES: tuple[str, ...] = ("none", "normal", "heavy")
HEAVY_ABOVE_BPM = 30.0
NONE_BELOW_BPM = 2.0


def breath_class(rate_bpm: float) -> int:
    """Index into :data:`BREATH_CLASSES` for a rate in breaths per minute."""
    if rate_bpm < NONE_BELOW_BPM:
        return 0
    return 2 if rate_bpm > HEAVY_ABOVE_BPM else 1


@dataclass
class BreathClip:
    """One generated clip: samples ``(T,)`` and its truth.

    ``breath_count`` is ``rate_bpm * duration_s / 60`` (the paper's relation between the
    two labels); ``onsets_s`` are the inhalation onsets actually placed in the clip.
    """

    audio: np.ndarray
    sample_rate_hz: int
    rate_bpm: float
    breath_count: float
    noisy: bool
    snr_db: float | None
    noise_type: str | None
    onsets_s: list[float] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate_hz


def _band_noise(n: int, low_hz: float, high_hz: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    high = min(high_hz, 0.45 * sr)
    sos = butter(4, [low_hz, high], btype="bandpass", fs=sr, output="sos")
    return sosfilt(sos, rng.standard_normal(n))


def _burst_envelope(n: int, attack: float) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 envelope of ``n`` samples peaking at fraction ``attack``."""
    u = np.linspace(0.0, 1.0, n, endpoint=False)
    rise = np.sin(0.5 * np.pi * np.clip(u / attack, 0, 1)) ** 2
    fall = np.cos(0.5 * np.pi * np.clip((u - attack) / (1 - attack), 0, 1)) ** 2
    return np.where(u < attack, rise, fall)


def cycle_periods(duration_s: float, rate_bpm: float, irregularity: float, rng: np.random.Generator) -> np.ndarray:
    """Jittered breath periods (s) whose mean is exactly ``60 / rate_bpm``; enough to cover
    the clip from a random phase before its start."""
    period = 60.0 / rate_bpm
    n = int(np.ceil(duration_s / period)) + 3
    jitter = np.clip(1.0 + irregularity * rng.standard_normal(n), 0.5, 1.5)
    return period * jitter / jitter.mean()


def synth_breath(
    duration_s: float,
    rate_bpm: float,
    sample_rate_hz: int = 4000,
    rng: np.random.Generator | None = None,
    irregularity: float = 0.1,
    snr_db: float | None = None,
    noise_type: str | None = None,
    noisy_below_snr_db: float = 20.0,
) -> BreathClip:
    """Generate one clip of breathing at ``rate_bpm`` (0-60), optionally with background noise.

    Args:
        duration_s: clip length in seconds.
        rate_bpm: mean breathing rate; below ``NONE_BELOW_BPM`` the clip holds no breath.
        sample_rate_hz: output rate (breath sounds are placed below 0.45 of it).
        rng: random generator (``default_rng(0)`` when absent).
        irregularity: standard deviation of each period relative to the mean.
        snr_db: if given (with ``noise_type``), background noise mixed at this SNR
            relative to the breath sounds; a clip without breaths gets the noise at a fixed level.
        noise_type: one of :data:`pulmo.data.transforms.audio.NOISE_TYPES`.
        noisy_below_snr_db: the clip's ``noisy`` flag is set when ``snr_db`` is below this.

    Returns:
        A :class:`BreathClip` scaled to a peak of 0.5.
    """
    if not 0.0 <= rate_bpm <= 60.0:
        raise ValueError(f"rate_bpm must lie in [0, 60], got {rate_bpm}")
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    rng = rng or np.random.default_rng(0)
    sr = sample_rate_hz
    n = int(round(duration_s * sr))
    out = np.zeros(n)
    onsets: list[float] = []
    if rate_bpm >= NONE_BELOW_BPM:
        periods = cycle_periods(duration_s, rate_bpm, irregularity, rng)
        t = -rng.uniform(0, periods[0])  # random phase: the clip may start mid-breath
        lo_in, hi_in = rng.uniform(150, 300), rng.uniform(700, 1400)
        exhale_gain = rng.uniform(0.3, 0.7)
        for p in periods:
            if t >= duration_s:
                break
            ti = p * rng.uniform(0.30, 0.45)
            te = p * rng.uniform(0.40, 0.55)
            for start, dur, (lo, hi), gain, attack in (
                (t, ti, (lo_in, hi_in), 1.0, 0.6),
                (t + ti, te, (0.7 * lo_in, 0.6 * hi_in), exhale_gain, 0.25),
            ):
                a, m = int(round(start * sr)), max(int(round(dur * sr)), 8)
                burst = _band_noise(m, lo, hi, sr, rng) * _burst_envelope(m, attack) * gain * rng.uniform(0.8, 1.2)
                lo_i, hi_i = max(a, 0), min(a + m, n)
                if hi_i > lo_i:
                    out[lo_i:hi_i] += burst[lo_i - a : hi_i - a]
            if t >= 0:
                onsets.append(round(t, 4))
            t += p
    floor = 1e-3 * rng.standard_normal(n)  # sensor noise, about 50-60 dB below the breaths
    signal = (out + floor).astype(np.float32)
    noisy = False
    if snr_db is not None and noise_type is not None:
        noise = make_noise(noise_type, n, sr, rng)
        if rate_bpm >= NONE_BELOW_BPM:
            signal = mix_at_snr(signal, noise, snr_db)
        else:
            signal = (signal + 0.1 * noise).astype(np.float32)
        noisy = snr_db < noisy_below_snr_db
    signal = (0.5 * signal / max(float(np.abs(signal).max()), 1e-9)).astype(np.float32)
    return BreathClip(signal, sr, float(rate_bpm), rate_bpm * duration_s / 60.0, noisy,
                      snr_db if noise_type else None, noise_type if snr_db is not None else None, onsets)


def write_breath_folder(root: str | Path, subjects: int = 3, rates_bpm: tuple[float, ...] = (8.0, 14.0, 20.0),
                        seconds: float = 20.0, sample_rate_hz: int = 2000, seed: int = 0) -> Path:
    """Write a small folder in the RRuJO layout (``audio/<bpm>/<subject>.flac`` and
    ``labels.csv`` with path, bpm, subject_code, device) for tests and demos."""
    import csv

    import soundfile as sf

    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(subjects):
        for rate in rates_bpm:
            rel = Path("audio") / f"{rate:g}" / f"subject{s:02d}.flac"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            clip = synth_breath(seconds, rate, sample_rate_hz, rng, irregularity=0.05)
            sf.write(root / rel, clip.audio, sample_rate_hz, subtype="PCM_16")
            rows.append({"path": rel.as_posix(), "device": "synthetic", "bpm": f"{rate:g}", "subject_code": f"subject{s:02d}"})
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def demo_recording(sample_rate_hz: int = 2000, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """A 60 s demo: 20 s calm (12 bpm), 20 s heavy breathing (40 bpm), 20 s recovering
    (18 bpm) with fan noise at 15 dB. Returns samples and ``(start_s, end_s, rate_bpm)`` parts."""
    rng = np.random.default_rng(seed)
    parts = [(0.0, 20.0, 12.0, None), (20.0, 40.0, 40.0, None), (40.0, 60.0, 18.0, 15.0)]
    audio = [synth_breath(end - start, rate, sample_rate_hz, rng, irregularity=0.08, snr_db=snr,
                          noise_type="fan" if snr is not None else None).audio for start, end, rate, snr in parts]
    return np.concatenate(audio), [(s, e, r) for s, e, r, _ in parts]
