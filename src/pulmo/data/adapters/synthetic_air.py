"""Air-microphone breathing with known ground truth: what a phone, an earbud or a microphone
under the nose records, simulated from the airflow that makes the sound.

No labelled air-microphone breathing with a usable licence could be had, so this simulator
stands in for it (training, validation on held-out settings, tests). Each clip is built in
five steps, every parameter drawn from a documented range (:class:`AirSettings`):

1. **Airflow** ``q(t)`` (litres per second, sign = direction): each breath is an inhalation,
   a half-sine of flow over ``inhale_fraction`` of the cycle (active, muscle-driven), then an
   exhalation with a fast rise and an exponential fall (passive recoil of the lungs), then an
   end-expiratory pause (``pause_fraction``), which shrinks as the rate rises. Periods are
   jittered (``irregularity``) and rescaled so the clip's mean rate is exactly the requested one.
2. **Turbulent flow noise**: the sound of turbulent flow through a constriction grows faster
   than the flow itself; its amplitude is taken as ``|q|^flow_exponent`` (1.5-2.5: tracheal
   and nasal sound amplitude grows with flow to about the second power in the literature).
3. **Where the air goes**: nasal breathing is band-pass (a few hundred Hz to 1.5-3 kHz: the
   nasal passages damp high frequencies), mouth breathing broadband and tilted up (0.5 to 6+
   kHz: an open jet), the paper's observation (Kumar et al., section IV-A). Exhalation and
   inhalation differ in colour and level: a near-field microphone in the exhaled jet hears
   exhalation louder (``exhale_gain_db`` up to +12 dB) and with wind rumble below 300 Hz;
   a phone held away can hear inhalation louder (down to -6 dB).
4. **The room and the device**: background noise (fan, traffic, wind, babble, mains hum,
   music) at an SNR; the microphone's self-noise; its response (a high-pass corner of
   MEMS microphones, a presence peak of earbud ports); a codec band limit (AAC at phone
   bitrates cuts 7-16 kHz); and a noise gate (phone apps and voice-call pipelines replace
   everything below a level with digital zeros between breaths).
5. **Sampling**: 8-48 kHz, the rates phones and earbuds record at.

Truth per clip: the rate (breaths per minute), the inhalation and exhalation onsets placed
in the clip, and the settings. Rates run 0 (no breathing) to 60 bpm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.signal import butter, sosfilt

from pulmo.data.adapters.synthetic_breath import NONE_BELOW_BPM, cycle_periods
from pulmo.data.transforms.audio import NOISE_TYPES, make_noise, mix_at_snr

#: Sample rates phones and earbuds record at (Hz).
AIR_SAMPLE_RATES_HZ: tuple[int, ...] = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
#: Background noise kinds: the shared generators plus music (below).
AIR_NOISES: tuple[str, ...] = (*sorted(NOISE_TYPES), "music")

#: Settings groups, disjoint in sample rate and background noise, so a rule chosen on ``val``
#: is measured on ``test`` recordings made under conditions it never saw; ``train`` is for
#: training networks.
SETTING_GROUPS: dict[str, dict[str, tuple[Any, ...]]] = {
    "train": {"sample_rates_hz": (16000, 24000, 48000), "noises": ("fan", "babble")},
    "val": {"sample_rates_hz": (8000, 32000), "noises": ("hum", "wind")},
    "test": {"sample_rates_hz": (11025, 22050, 44100), "noises": ("traffic", "music")},
}


@dataclass
class AirSettings:
    """One simulated recording condition (each range and why in the field comments).

    Frequencies in Hz, levels in dB, fractions of a breath cycle.
    """

    sample_rate_hz: int = 16000  # 8-48 kHz: phone and earbud capture rates
    route: str = "nasal"  # "nasal" | "mouth": where the air goes (spectrum, step 3)
    inhale_fraction: float = 0.4  # 0.33-0.5 of the cycle: Ti/Ttot at rest ~0.4, up to ~0.5 in exercise
    pause_fraction: float = 0.15  # 0-0.3 at rest, -> 0 above 30 bpm: end-expiratory pause
    irregularity: float = 0.08  # 0.02-0.25: breath-to-breath variation of the period (SD / mean); 0.25 ~ talking or sighing
    depth_variation: float = 0.2  # 0.05-0.4: breath-to-breath variation of the tidal volume (SD / mean)
    flow_exponent: float = 2.0  # 1.5-2.5: sound amplitude ~ |flow|^k for turbulent flow
    exhale_gain_db: float = 6.0  # -6..+20: exhalation level over inhalation (mic in the exhaled jet or not; +20: inhalation barely audible)
    nasal_low_hz: float = 250.0  # 150-400: lower edge of nasal flow noise
    nasal_high_hz: float = 2000.0  # 1200-3000: upper edge (nasal passages damp above)
    mouth_low_hz: float = 600.0  # 400-1000: lower edge of the open-mouth jet noise
    exhale_rumble: float = 0.3  # 0-0.8: share of low (< 300 Hz) wind rumble when the jet hits the mic
    noise: str | None = None  # background kind (AIR_NOISES) or None
    snr_db: float | None = None  # -5..40 dB breath-to-background power over the clip
    self_noise_db: float = -60.0  # -75..-45 dB re the breath level: microphone self-noise (white)
    highpass_hz: float = 80.0  # 20-200: MEMS / phone input high-pass corner
    presence_db: float = 3.0  # 0-8 dB peak at presence_hz: earbud port / phone mic resonance
    presence_hz: float = 3000.0  # 2-6 kHz
    codec_cutoff_hz: float | None = None  # None or 7-16 kHz: AAC-like band limit (low bitrates cut lower)
    gate_db: float | None = None  # None or -45..-20 dB re peak: noise gate level (digital zeros below)
    level_dbfs: float = -12.0  # -30..-3: peak level of the written clip
    events_per_min: float = 0.0  # 0-6: handling thumps, clicks, coughs and sniffs (transients not at the breath rate)


def draw_settings(rng: np.random.Generator, group: str = "train", rate_bpm: float = 15.0) -> AirSettings:
    """Random :class:`AirSettings` from the ranges documented there, with the sample rate and
    background noise drawn from ``SETTING_GROUPS[group]``. Faster breathing (``rate_bpm``)
    shortens the pause and makes mouth breathing likelier, as in exercise."""
    g = SETTING_GROUPS[group]
    heavy = rate_bpm > 30
    sr = int(rng.choice(g["sample_rates_hz"]))
    noisy = rng.random() < 0.8
    return AirSettings(
        sample_rate_hz=sr,
        route="mouth" if rng.random() < (0.7 if heavy else 0.3) else "nasal",
        inhale_fraction=float(rng.uniform(0.42, 0.5) if heavy else rng.uniform(0.33, 0.45)),
        pause_fraction=float(0.0 if heavy else rng.uniform(0.0, 0.3) * max(0.0, 1 - rate_bpm / 30)),
        irregularity=float(rng.uniform(0.02, 0.25)),
        depth_variation=float(rng.uniform(0.05, 0.4)),
        flow_exponent=float(rng.uniform(1.5, 2.5)),
        exhale_gain_db=float(rng.uniform(-6, 20)),
        nasal_low_hz=float(rng.uniform(150, 400)),
        nasal_high_hz=float(rng.uniform(1200, 3000)),
        mouth_low_hz=float(rng.uniform(400, 1000)),
        exhale_rumble=float(rng.uniform(0, 0.8)),
        noise=str(rng.choice(g["noises"])) if noisy else None,
        snr_db=float(rng.uniform(-5, 40)) if noisy else None,
        self_noise_db=float(rng.uniform(-75, -45)),
        highpass_hz=float(rng.uniform(20, 200)),
        presence_db=float(rng.uniform(0, 8)),
        presence_hz=float(rng.uniform(2000, 6000)),
        codec_cutoff_hz=float(rng.uniform(7000, 16000)) if rng.random() < 0.5 else None,
        gate_db=float(rng.uniform(-45, -20)) if rng.random() < 0.25 else None,
        level_dbfs=float(rng.uniform(-30, -3)),
        events_per_min=float(rng.uniform(0, 6)),
    )


@dataclass
class AirClip:
    """A simulated clip ``audio`` ``(T,)`` float32 at ``settings.sample_rate_hz``, its rate
    (bpm) and the inhalation / exhalation onsets (s) placed in it."""

    audio: np.ndarray
    rate_bpm: float
    settings: AirSettings
    inhale_onsets_s: list[float] = field(default_factory=list)
    exhale_onsets_s: list[float] = field(default_factory=list)

    @property
    def sample_rate_hz(self) -> int:
        return self.settings.sample_rate_hz

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate_hz

    def truth(self) -> dict[str, Any]:
        return {"rate_bpm": self.rate_bpm, **asdict(self.settings)}


def airflow(duration_s: float, rate_bpm: float, s: AirSettings, rng: np.random.Generator,
            frame_hz: int = 200) -> tuple[np.ndarray, list[float], list[float]]:
    """Airflow ``(duration_s * frame_hz,)`` (inhalation > 0, exhalation < 0, peak 1) and the
    inhalation and exhalation onsets (s) inside the clip."""
    n = int(round(duration_s * frame_hz))
    q = np.zeros(n)
    ins: list[float] = []
    exs: list[float] = []
    if rate_bpm < NONE_BELOW_BPM:
        return q, ins, exs
    periods = cycle_periods(duration_s, rate_bpm, s.irregularity, rng)
    t = -rng.uniform(0, periods[0])
    for p in periods:
        if t >= duration_s:
            break
        ti = p * s.inhale_fraction
        te = p * max(1.0 - s.inhale_fraction - s.pause_fraction, 0.3)
        depth = float(np.clip(1.0 + s.depth_variation * rng.standard_normal(), 0.3, 2.0))
        for start, dur, sign in ((t, ti, 1.0), (t + ti, te, -1.0)):
            a, m = int(round(start * frame_hz)), max(int(round(dur * frame_hz)), 2)
            u = np.linspace(0, 1, m, endpoint=False)
            shape = np.sin(np.pi * u) if sign > 0 else (1 - np.exp(-u / 0.08)) * np.exp(-u / 0.35) * (1 - u)
            shape = shape / shape.max()
            lo, hi = max(a, 0), min(a + m, n)
            if hi > lo:
                q[lo:hi] += sign * depth * shape[lo - a: hi - a]
            if 0 <= start < duration_s:
                (ins if sign > 0 else exs).append(round(start, 4))
        t += p
    return q, ins, exs


def _sos(kind: str, edges: float | list[float], sr: int, order: int = 4) -> np.ndarray:
    return butter(order, edges, btype=kind, fs=sr, output="sos")


def _flow_noise(n: int, sr: int, s: AirSettings, exhale: bool, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` unit-power turbulent noise coloured by the route and the flow direction."""
    top = 0.45 * sr
    if s.route == "nasal":
        lo, hi = (0.8 if exhale else 1.0) * s.nasal_low_hz, min(s.nasal_high_hz * (0.9 if exhale else 1.1), top)
        x = sosfilt(_sos("bandpass", [lo, hi], sr), rng.standard_normal(n))
    else:
        x = sosfilt(_sos("highpass", s.mouth_low_hz * (0.8 if exhale else 1.0), sr), rng.standard_normal(n))
        x += 0.3 * np.diff(rng.standard_normal(n + 1))  # +6 dB/octave tilt: open jets are bright
        x = sosfilt(_sos("lowpass", min(9000.0, top), sr), x)
    x = x / (np.std(x) + 1e-12)
    if exhale and s.exhale_rumble > 0:
        rumble = sosfilt(_sos("lowpass", 300.0, sr), rng.standard_normal(n))
        x = x + s.exhale_rumble * rumble / (np.std(rumble) + 1e-12)
    return x / (np.std(x) + 1e-12)


def music(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power music-like noise: chords of harmonic notes (110-880 Hz) changing every
    0.3-1 s, with a decaying attack per chord."""
    out = np.zeros(n)
    i = 0
    while i < n:
        m = min(int(rng.uniform(0.3, 1.0) * sr), n - i)
        t = np.arange(m) / sr
        chord = sum(sum(0.5 ** h * np.sin(2 * np.pi * f * (h + 1) * t) for h in range(4) if f * (h + 1) < 0.45 * sr)
                    for f in 110.0 * 2 ** (rng.integers(0, 37, size=3) / 12))
        out[i: i + m] = chord * np.exp(-t / rng.uniform(0.2, 1.0))
        i += m
    return (out / (np.std(out) + 1e-12)).astype(np.float32)


def background(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` unit-power room noise of ``kind`` (one of :data:`AIR_NOISES`)."""
    return music(n, sr, rng) if kind == "music" else make_noise(kind, n, sr, rng)


def transients(n: int, sr: int, events_per_min: float, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` transient events at random times (Poisson, ``events_per_min``), each 20-400 ms
    of noise under a fast-attack decay, 0-15 dB above the breath level (unit = the breath RMS):
    handling thumps (low-passed), clicks (broadband, short), coughs and sniffs (band-passed)."""
    out = np.zeros(n)
    for _ in range(rng.poisson(events_per_min * n / sr / 60)):
        m = int(rng.uniform(0.02, 0.4) * sr)
        a = int(rng.integers(0, max(n - m, 1)))
        kind = rng.integers(0, 3)
        e = rng.standard_normal(m)
        if kind == 0:
            e = sosfilt(_sos("lowpass", 200.0, sr), e)
        elif kind == 2:
            e = sosfilt(_sos("bandpass", [300.0, min(3000.0, 0.45 * sr)], sr), e)
        e = e / (np.std(e) + 1e-12) * np.exp(-np.arange(m) / (0.25 * m)) * 10 ** (rng.uniform(0, 15) / 20)
        out[a: a + m] += e[: n - a]
    return out


def noise_gate(x: np.ndarray, sr: int, gate_db: float, hold_s: float = 0.05) -> np.ndarray:
    """Digital zeros wherever the 20 ms RMS stays below ``gate_db`` re the loudest frame
    (held open ``hold_s`` around louder frames), as voice pipelines and phone apps do."""
    frame = max(int(0.02 * sr), 1)
    k = len(x) // frame
    if k == 0:
        return x
    rms = np.sqrt(np.mean(x[: k * frame].reshape(k, frame) ** 2, axis=1))
    open_ = 20 * np.log10(rms / (rms.max() + 1e-12) + 1e-12) > gate_db
    hold = max(int(hold_s / 0.02), 1)
    open_ = np.convolve(open_.astype(float), np.ones(2 * hold + 1), "same") > 0
    mask = np.repeat(open_, frame)
    mask = np.concatenate([mask, np.repeat(open_[-1:], len(x) - len(mask))])
    return np.where(mask, x, 0.0)


def synth_air(duration_s: float, rate_bpm: float, settings: AirSettings | None = None,
              rng: np.random.Generator | None = None) -> AirClip:
    """Simulate ``duration_s`` seconds of air-microphone breathing at ``rate_bpm`` (0-60).

    Returns an :class:`AirClip` whose ``audio`` peaks at ``settings.level_dbfs`` (or is all
    zeros after a noise gate with nothing above it)."""
    if not 0.0 <= rate_bpm <= 60.0:
        raise ValueError(f"rate_bpm must lie in [0, 60], got {rate_bpm}")
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    rng = rng or np.random.default_rng(0)
    s = settings or AirSettings()
    if not 8000 <= s.sample_rate_hz <= 48000:
        raise ValueError(f"air sample rates run 8-48 kHz, got {s.sample_rate_hz}")
    sr = s.sample_rate_hz
    n = int(round(duration_s * sr))
    frame_hz = 200
    q, ins, exs = airflow(duration_s, rate_bpm, s, rng, frame_hz)
    grid = (np.arange(n) + 0.5) * frame_hz / sr
    flow = np.interp(grid, np.arange(len(q)) + 0.5, q) if len(q) else np.zeros(n)
    amp = np.abs(flow) ** s.flow_exponent
    ex_gain = 10 ** (s.exhale_gain_db / 20)
    breath = (amp * (flow > 0) * _flow_noise(n, sr, s, False, rng)
              + ex_gain * amp * (flow < 0) * _flow_noise(n, sr, s, True, rng))
    ref = np.sqrt(np.mean(breath**2)) if rate_bpm >= NONE_BELOW_BPM else 1e-2
    x = breath + ref * 10 ** (s.self_noise_db / 20) * rng.standard_normal(n)
    x = x + ref * transients(n, sr, s.events_per_min, rng)
    if s.noise is not None and s.snr_db is not None:
        bg = background(s.noise, n, sr, rng)
        x = mix_at_snr(x, bg, s.snr_db) if rate_bpm >= NONE_BELOW_BPM else x + ref * bg
    x = sosfilt(_sos("highpass", s.highpass_hz, sr, 2), x)
    if s.presence_db > 0:  # a resonance: add a band-passed copy
        bw = [s.presence_hz / 1.4, min(s.presence_hz * 1.4, 0.45 * sr)]
        if bw[0] < bw[1]:
            x = x + (10 ** (s.presence_db / 20) - 1) * sosfilt(_sos("bandpass", bw, sr, 2), x)
    if s.codec_cutoff_hz is not None and s.codec_cutoff_hz < 0.45 * sr:
        x = sosfilt(_sos("lowpass", s.codec_cutoff_hz, sr, 8), x)
    if s.gate_db is not None:
        x = noise_gate(x, sr, s.gate_db)
    peak = float(np.abs(x).max())
    if peak > 0:
        x = x * 10 ** (s.level_dbfs / 20) / peak
    return AirClip(x.astype(np.float32), float(rate_bpm), s, ins, exs)


__all__ = ["AIR_NOISES", "AIR_SAMPLE_RATES_HZ", "AirClip", "AirSettings", "SETTING_GROUPS", "airflow", "background",
           "draw_settings", "music", "noise_gate", "synth_air", "transients"]
