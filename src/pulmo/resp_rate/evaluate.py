"""Scoring rates on recordings: window predictions aggregated per recording, the DSP
baseline beside them, and a held-out synthetic set with noise at known SNRs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pulmo.data.adapters.synthetic_breath import BREATH_CLASSES, breath_class, synth_breath
from pulmo.data.transforms.audio import NOISE_TYPES, make_noise, mix_at_snr
from pulmo.metrics.regression import f1_scores, mse_by_range, regression_report
from pulmo.resp_rate.config import ClipConfig
from pulmo.resp_rate.data import Recording
from pulmo.resp_rate.dsp import DspConfig, breath_envelope, rate_from_envelope
from pulmo.resp_rate.net import recording_rate
from pulmo.resp_rate.predictor import RatePredictor


@dataclass
class LabelledAudio:
    """Audio at the working rate with its truth: rate (bpm), noise flag, and a group
    name (e.g. an SNR band) for breakdowns."""

    key: str
    samples: np.ndarray
    rate_bpm: float
    noisy: bool = False
    group: str = ""


def labelled_recordings(recordings: Sequence[Recording]) -> list[LabelledAudio]:
    """Loaded real recordings as scoring items: their label, noise flag (unlabelled = clean) and device as group."""
    return [LabelledAudio(r.record.record_id, r.samples, r.rate_bpm, bool(r.record.noisy), r.record.device)
            for r in recordings]


def score_model(model: RatePredictor, items: Sequence[LabelledAudio], alternatives: Sequence[ClipConfig] = ()) -> dict:
    """Recording-level metrics (the model's recording rates: for one network, the aggregate
    of its window rates refined as ``model.clip`` says) plus window-level ones;
    ``alternative_mae`` holds the recording MAE for each clip config of ``alternatives``
    applied to the same window predictions (other refinement tolerances or checks, for
    choosing among them on validation without predicting again; not meaningful for a vote).

    Returns ``{"recording": report, "window": report, "mse_by_range": ..., "breath_f1": ...,
    "noise_f1": ..., "predictions": [(key, true, predicted), ...]}``; reports hold ``mae``,
    ``mse``, ``ccc``, ``pearson``, ``bias``, ``loa``, ``n`` in breaths per minute.
    """
    rec_pred, rec_true, win_pred, win_true = [], [], [], []
    b_pred, b_true, n_pred, n_true = [], [], [], []
    alternative: list[list[float]] = [[] for _ in alternatives]
    for it in items:
        pred = model.predict(it.samples)
        w = pred.windows
        rec_pred.append(pred.rate_bpm)
        for errors, other in zip(alternative, alternatives):
            errors.append(abs(recording_rate(it.samples, w, other) - it.rate_bpm))
        rec_true.append(it.rate_bpm)
        win_pred.extend(w.rate_bpm.tolist())
        win_true.extend([it.rate_bpm] * len(w.rate_bpm))
        b_pred.extend(w.breath_probs.argmax(1).tolist())
        b_true.extend([breath_class(it.rate_bpm)] * len(w.rate_bpm))
        n_pred.extend(w.noise_probs.argmax(1).tolist())
        n_true.extend([int(it.noisy)] * len(w.rate_bpm))
    return {
        "recording": regression_report(rec_pred, rec_true),
        "window": regression_report(win_pred, win_true),
        "mse_by_range": mse_by_range(rec_pred, rec_true),
        "breath_f1": f1_scores(b_pred, b_true, len(BREATH_CLASSES)),
        "noise_f1": f1_scores(n_pred, n_true, 2),
        "predictions": [(it.key, it.rate_bpm, p) for it, p in zip(items, rec_pred)],
        "alternative_mae": [float(np.mean(v)) for v in alternative],
    }


def score_dsp(clip: ClipConfig, items: Sequence[LabelledAudio], dsp: DspConfig | None = None) -> dict:
    """The DSP baseline on the same items: whole recording (``recording``) and windows of
    the model's length every 4 hops (``window``), each window's rate taken from its stretch
    of the recording's envelope (computed once per recording)."""
    dsp = dsp or DspConfig()
    sr = clip.sample_rate_hz
    win = int(round(clip.window_s * dsp.envelope_hz))
    hop = max(int(round(4 * clip.hop_s * dsp.envelope_hz)), 1)
    rec, win_pred, win_true = [], [], []
    for it in items:
        env = breath_envelope(it.samples, sr, dsp)
        rec.append(rate_from_envelope(env, dsp))
        for s in range(0, len(env) - win + 1, hop):
            part = env[s : s + win]
            win_pred.append(rate_from_envelope(part - part.mean(), dsp))
            win_true.append(it.rate_bpm)
    truth = [it.rate_bpm for it in items]
    return {"recording": regression_report(rec, truth), "window": regression_report(win_pred, win_true),
            "mse_by_range": mse_by_range(rec, truth),
            "predictions": [(it.key, it.rate_bpm, p) for it, p in zip(items, rec)]}


SNR_BANDS: dict[str, tuple[float, float] | None] = {
    "clean": None, "30-40 dB": (30.0, 40.0), "20-30 dB": (20.0, 30.0), "10-20 dB": (10.0, 20.0), "0-10 dB": (0.0, 10.0),
}


def synthetic_test_set(sample_rate_hz: int, n_per_band: int = 40, seconds: float = 30.0, seed: int = 12345,
                       noisy_below_snr_db: float = 20.0) -> list[LabelledAudio]:
    """Held-out synthetic recordings: rates 0 (10 %) or 5-60 bpm, irregularity 0-0.2, each
    SNR band of :data:`SNR_BANDS` with every noise type in turn. Seeded separately from training."""
    rng = np.random.default_rng(seed)
    kinds = sorted(NOISE_TYPES)
    items = []
    for band, snr_range in SNR_BANDS.items():
        for i in range(n_per_band):
            rate = 0.0 if i % 10 == 0 else float(rng.uniform(5, 60))
            snr = None if snr_range is None else float(rng.uniform(*snr_range))
            c = synth_breath(seconds, rate, sample_rate_hz, rng, irregularity=float(rng.uniform(0, 0.2)),
                             snr_db=snr, noise_type=None if snr is None else kinds[i % len(kinds)],
                             noisy_below_snr_db=noisy_below_snr_db)
            items.append(LabelledAudio(f"synthetic/{band}/{i}", c.audio, rate, c.noisy, band))
    return items


def with_noise_bands(items: Sequence[LabelledAudio], sample_rate_hz: int, seed: int = 2024,
                     noisy_below_snr_db: float = 20.0) -> list[LabelledAudio]:
    """Every item once per SNR band of :data:`SNR_BANDS`: as it is (``clean``), and with
    background noise mixed in at an SNR drawn uniformly within each other band (noise types of
    :data:`pulmo.data.transforms.audio.NOISE_TYPES` in turn, seeded). Each copy's group is its
    band, its key ``"<key>@<band>"``, and it is flagged noisy below ``noisy_below_snr_db``
    (the clean copy keeps the item's own flag). Real breathing with known noise: what the
    synthetic set's bands measure, on recordings that are not synthetic."""
    rng = np.random.default_rng(seed)
    kinds = sorted(NOISE_TYPES)
    out = []
    for i, it in enumerate(items):
        for band, snr_range in SNR_BANDS.items():
            if snr_range is None:
                out.append(LabelledAudio(f"{it.key}@{band}", it.samples, it.rate_bpm, it.noisy, band))
                continue
            snr = float(rng.uniform(*snr_range))
            noise = make_noise(kinds[i % len(kinds)], len(it.samples), sample_rate_hz, rng)
            mixed = mix_at_snr(it.samples, noise, snr).astype(it.samples.dtype)
            out.append(LabelledAudio(f"{it.key}@{band}", mixed, it.rate_bpm, snr < noisy_below_snr_db, band))
    return out


def by_group(items: Sequence[LabelledAudio], predictions: Sequence[tuple[str, float, float]]) -> dict[str, dict]:
    """Recording-level report per item group (e.g. per SNR band)."""
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for it, (_, t, p) in zip(items, predictions):
        groups.setdefault(it.group, ([], []))
        groups[it.group][0].append(p)
        groups[it.group][1].append(t)
    return {g: regression_report(p, t) for g, (p, t) in groups.items()}
