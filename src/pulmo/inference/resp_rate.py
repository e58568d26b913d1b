"""Respiratory-rate inference: a recording in, a windowed rate track, heavy-breathing and
noise flags out; and scoring of a folder of labelled recordings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pulmo.data.adapters.breath_csv import load_breath_csv
from pulmo.data.adapters.synthetic_breath import BREATH_CLASSES, HEAVY_ABOVE_BPM
from pulmo.data.audio_io import audio_header, read_audio
from pulmo.engine.checkpoint import file_hash, read_checkpoint
from pulmo.errors import AudioTooShortError, DataError
from pulmo.inference.bundled import default_checkpoint, resp_rate_short_checkpoint
from pulmo.metrics.regression import regression_report
from pulmo.resp_rate.data import load_recording
from pulmo.resp_rate.air import (WIDE_RATE_HZ, AirDspConfig, air_rule_rate, air_uncertain, estimate_rate_air,
                                 front_end)
from pulmo.resp_rate.config import ClipConfig
from pulmo.resp_rate.dsp import estimate_rate_dsp
from pulmo.resp_rate.net import NOISE_CLASSES, WindowPredictions
from pulmo.resp_rate.predictor import (CompositePredictor, RatePredictor, RecordingPrediction, VotePredictor, breathing_bundle,
                                      predictor_from_checkpoint)


@dataclass
class RateWindow:
    """One window: bounds (s), rate (bpm), breaths counted, breathing class and its
    probabilities, heavy-breathing and noise flags."""

    start_s: float
    end_s: float
    rate_bpm: float
    breath_count: float
    breathing: str
    probabilities: dict[str, float]
    heavy: bool
    noisy: bool
    noise_probability: float


@dataclass
class RateTrack:
    """A recording's rate track and its summary (the model's recording rate: see
    :func:`aggregate_description`), the fraction of windows flagged heavy and the recording's noise flag
    (more than half of the windows noisy). ``heavy_assessed`` is False for a model that never
    saw heavy breathing in training: its heavy flags are then meaningless (always off).
    ``rate_doubt`` scores how far to trust ``rate_bpm`` (:mod:`pulmo.resp_rate.doubt`);
    ``rate_uncertain`` says whether it exceeds the model's threshold (None: the checkpoint has none).
    ``rate_bpm`` is rounded to 0.1; ``rate_interval_bpm`` is the 2.5-97.5 % range of the window
    rates it summarises; ``front_end`` (``air`` | ``stethoscope``) and ``rate_source``
    (``networks``, or on air audio the rule of :data:`pulmo.resp_rate.air.AIR_RULES`) say how it was made, ``members`` what each estimator read
    (bpm), ``front_end_measurements`` the shares of power above 1 and 3 kHz the front end used."""

    path: str
    duration_s: float
    rate_bpm: float
    heavy_fraction: float
    noisy: bool
    rate_doubt: float
    rate_uncertain: bool | None
    windows: list[RateWindow]
    model: dict[str, str] = field(default_factory=dict)
    heavy_assessed: bool = True
    rate_interval_bpm: list[float] = field(default_factory=list)
    front_end: str = "stethoscope"
    rate_source: str = "networks"
    members: dict[str, float] = field(default_factory=dict)
    front_end_measurements: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RateEstimate:
    """What the pipeline makes of one recording: the networks' prediction (on air audio with
    the ``air_networks`` rule, the air-trained networks'), the front end
    (``air`` | ``stethoscope``, :func:`pulmo.resp_rate.air.front_end`) and its measurements,
    the recording's rate (bpm) and where it came from (``networks`` or an air rule), the
    2.5-97.5 % range of the window rates the rate summarises (bpm), the members' rates (the
    networks, the stethoscope-band harmonic-sum DSP at the model's rate, and on air audio the
    air-band DSP and any air-trained networks), the share of windows above 30 bpm, and whether the rate is uncertain
    (None: no threshold)."""

    prediction: RecordingPrediction
    front_end: str
    measurements: dict[str, float]
    rate_bpm: float
    rate_source: str
    interval_bpm: list[float]
    members: dict[str, float]
    heavy_fraction: float | None
    uncertain: bool | None


class RespRatePipeline:
    """Loads a resp-rate checkpoint (the bundled one by default: a vote of composites, see
    :mod:`pulmo.resp_rate.predictor`) and applies it to files."""

    def __init__(self, checkpoint: str | Path | None = None) -> None:
        path = Path(checkpoint) if checkpoint else default_checkpoint("resp-rate")
        bundle = read_checkpoint(path)
        self.predictor = predictor_from_checkpoint(bundle)
        subjects = bundle.get("metrics", {}).get("subjects", {})
        self.seen_subjects = set(subjects.get("train", [])) | set(subjects.get("val", []))
        self.path = path
        self.metrics: dict[str, Any] = bundle.get("metrics", {})
        self.heavy_assessed = learned_heavy_breathing(breathing_bundle(bundle).get("config", {}))
        above = bundle.get("doubt_above")
        self.doubt_above: float | None = None if above is None else float(above)
        air = bundle.get("air", {})  # networks trained for air audio and the rule chosen on validation, where bundled
        self.air_rule: str = air.get("rule", "air_dsp")
        self.air_networks = predictor_from_checkpoint(air["networks"]) if "networks" in air else None
        self.model = {"name": bundle["name"], "checkpoint": path.name, "sha256": file_hash(path),
                      "pulmo_version": bundle.get("pulmo_version", "")}

    @property
    def clip(self) -> ClipConfig:
        return self.predictor.clip

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | None = None) -> RespRatePipeline:
        return cls(checkpoint)

    def load(self, path: str | Path) -> np.ndarray:
        """The file at the model's rate; ``DataError`` if unreadable, NaN or silent,
        ``AudioTooShortError`` (naming the bundled short-clip model) if shorter than ``clip.min_s``."""
        try:
            return load_recording(str(path), self.clip.sample_rate_hz, self.clip.min_s)
        except AudioTooShortError as err:
            short = resp_rate_short_checkpoint()
            if short is not None and self.path.resolve() != short.resolve():
                raise AudioTooShortError(f"{err}; for short clips use the short-clip model: --checkpoint {short}",
                                         err.duration_s) from None
            raise

    def windows(self, samples: np.ndarray) -> WindowPredictions:
        return self.predictor.windows(samples)

    def uncertain(self, doubt: float) -> bool | None:
        """Whether a rate with this doubt score is flagged uncertain (None: the model has no threshold)."""
        return None if self.doubt_above is None else doubt > self.doubt_above

    def load_wide(self, path: str | Path) -> tuple[np.ndarray, int, int]:
        """``(samples (T,), their rate, the file's rate)``: the file at its own rate, at most
        :data:`pulmo.resp_rate.air.WIDE_RATE_HZ` (the air band)."""
        native = audio_header(path).sample_rate_hz
        samples, rate = read_audio(path, sample_rate_hz=min(native, WIDE_RATE_HZ))
        return samples, rate, native

    def estimate(self, path: str | Path, samples: np.ndarray | None = None) -> RateEstimate:
        """The recording's rate: the networks' on stethoscope audio; on air-microphone audio
        what the checkpoint's air rule makes of the air members (``air_dsp`` without one;
        chosen on validation: docs/respiratory-rate.md, "Through the air").

        ``samples``: the file already loaded by :meth:`load`. When ``path`` is not a readable
        file (samples handed in directly), the front end is decided on ``samples`` at the
        model's rate, which is always ``stethoscope``.

        Raises:
            DataError: silent audio (digital silence, at any level of the pipeline), or air
                audio without any breathing rhythm.
        """
        samples = self.load(path) if samples is None else samples
        if not len(samples) or float(np.abs(samples).max()) < 1e-6 or float(np.std(samples)) < 1e-7:
            raise DataError(f"{Path(path).name} is silent (no signal above 1e-6 full scale): no rate")
        if Path(path).is_file():
            wide, wide_rate, native = self.load_wide(path)
        else:
            wide, wide_rate, native = samples, self.clip.sample_rate_hz, self.clip.sample_rate_hz
        kind, measured = front_end(wide, wide_rate, native)
        pred = self.predictor.predict(samples)
        members = {"networks": float(pred.rate_bpm)}
        try:
            members["dsp_stethoscope_band"] = estimate_rate_dsp(samples, self.clip.sample_rate_hz)
        except ValueError:
            pass
        if kind == "air":
            air = estimate_rate_air(wide, wide_rate, AirDspConfig())
            if not np.isfinite(air.rate_bpm):
                raise DataError(f"{Path(path).name}: no breathing rhythm in any frequency band (digital silence or a "
                                "steady sound): no rate")
            members["dsp_air_band"] = air.rate_bpm
            rates = air.window_rates_bpm[np.isfinite(air.window_rates_bpm)]
            if self.air_networks is not None:
                air_pred = self.air_networks.predict(samples)
                members["air_networks"] = float(air_pred.rate_bpm)
                if self.air_rule == "air_networks":  # their windows are the track's
                    pred, rates = air_pred, air_pred.windows.rate_bpm
            baseline = members.get("dsp_stethoscope_band", air.rate_bpm)
            uncertain = air_uncertain(self.air_rule, members, air, baseline)
            return RateEstimate(pred, kind, measured, air_rule_rate(self.air_rule, members), self.air_rule, interval(rates),
                                members, float(np.mean(rates > HEAVY_ABOVE_BPM)), uncertain)
        w = pred.windows.rate_bpm
        return RateEstimate(pred, kind, measured, float(pred.rate_bpm), "networks", interval(w), members, None,
                            self.uncertain(pred.doubt))

    def analyze_file(self, path: str | Path, samples: np.ndarray | None = None) -> RateTrack:
        """Rate track of ``path`` (or of ``samples`` already loaded from it by :meth:`load`)."""
        samples = self.load(path) if samples is None else samples
        est = self.estimate(path, samples)
        pred = est.prediction
        w = pred.windows
        heavy_idx = BREATH_CLASSES.index("heavy")
        rows = []
        for i, s in enumerate(w.starts_s):
            probs = {k: float(p) for k, p in zip(BREATH_CLASSES, w.breath_probs[i])}
            cls = BREATH_CLASSES[int(w.breath_probs[i].argmax())]
            rows.append(RateWindow(float(s), float(s + w.window_s), float(w.rate_bpm[i]), float(w.count[i]), cls, probs,
                                   int(w.breath_probs[i].argmax()) == heavy_idx, bool(w.noise_probs[i, 1] > 0.5),
                                   float(w.noise_probs[i, NOISE_CLASSES.index("noisy")])))
        heavy = float(np.mean([r.heavy for r in rows])) if est.heavy_fraction is None else est.heavy_fraction
        return RateTrack(str(path), len(samples) / self.clip.sample_rate_hz, round(est.rate_bpm, 1), heavy,
                         bool(np.mean([r.noisy for r in rows]) > 0.5), pred.doubt, est.uncertain, rows, dict(self.model),
                         self.heavy_assessed or est.front_end == "air", est.interval_bpm, est.front_end, est.rate_source,
                         {k: round(v, 1) for k, v in est.members.items()}, est.measurements)


def interval(rates_bpm: np.ndarray) -> list[float]:
    """``[2.5 %, 97.5 %]`` quantiles of window rates ``(W,)`` (bpm), rounded to 0.1."""
    lo, hi = np.percentile(np.asarray(rates_bpm, float), [2.5, 97.5])
    return [round(float(lo), 1), round(float(hi), 1)]


def learned_heavy_breathing(config: dict[str, Any]) -> bool:
    """Whether a checkpoint's training config gave it rates in the heavy range: synthetic clips
    (0-60 bpm) or time-compressed real clips. Real RRuJO recordings stop at 20 bpm; a config
    without these sources never saw the heavy class. Checkpoints without a config count as trained."""
    data = config.get("data")
    if not isinstance(data, dict):
        return True
    return float(data.get("synthetic_fraction", 0.0)) > 0 or float(data.get("time_compress_fraction", 0.0)) > 0


def evaluate_folder(pipe: RespRatePipeline, data: str | Path, limit: int = 0, split: str = "test",
                    short: RespRatePipeline | None = None, progress: bool = False) -> dict[str, Any]:
    """Score every recording listed in ``data``'s ``labels.csv`` (path and bpm/rr_bpm).

    Each recording is cut into windows of the model's clip length; its rate is the model's
    recording rate (``aggregate`` says how it is made). Top-level ``mae``, ``mse``, ``ccc``, ``pearson`` (bpm)
    and ``n`` are per recording; ``window`` holds the same metrics per window (each window
    scored against its recording's label); ``per_device`` the recording metrics by device.

    ``split="test"`` leaves out recordings of subjects the checkpoint (or ``short``) was trained
    or validated on (their count is reported); ``split="all"`` scores every recording.
    With ``short`` (the short-clip pipeline), recordings too short for ``pipe`` are scored by it
    instead; ``per_model`` then gives the metrics of each model's recordings.

    Where every model used has a doubt threshold, ``uncertain`` gives the number and share of
    recordings whose rate was flagged uncertain and the metrics of the ``confident`` and the
    ``flagged`` ones (:func:`split_by_doubt`). ``progress``: a progress bar on stderr.
    """
    from tqdm.auto import tqdm

    if split not in ("test", "all"):
        raise DataError(f"--split for resp-rate is 'test' (subjects unseen by the model) or 'all', got {split!r}")
    records = load_breath_csv(data)
    seen_subjects = pipe.seen_subjects | (short.seen_subjects if short else set())
    seen = [r for r in records if r.patient_id in seen_subjects] if split == "test" else []
    records = [r for r in records if r not in seen]
    if not records:
        raise DataError(f"{data}: every recording belongs to a subject the model was trained or validated on; "
                        "use --split all to score them anyway")
    if limit:
        records = records[:limit]
    rec_pred, rec_true, win_pred, win_true, devices, used, flags, fronts = [], [], [], [], [], [], [], []
    for r in tqdm(records, desc="scoring", unit="recording", disable=not progress):
        try:
            try:
                model = pipe
                samples = pipe.load(r.path)
            except AudioTooShortError:
                if short is None:
                    raise
                model = short
                samples = short.load(r.path)
            est = model.estimate(r.path, samples)
        except DataError as err:
            raise DataError(f"{r.record_id}: {err}") from None
        pred = est.prediction
        used.append(model.model["checkpoint"])
        flags.append(est.uncertain)
        fronts.append(est.front_end)
        w = pred.windows
        rec_pred.append(est.rate_bpm)
        rec_true.append(float(r.rr_bpm or 0.0))
        win_pred.extend(w.rate_bpm.tolist())
        win_true.extend([float(r.rr_bpm or 0.0)] * len(w.rate_bpm))
        devices.append(r.device or "unknown")
    report: dict[str, Any] = regression_report(rec_pred, rec_true)
    report["unit"] = "breaths per minute"
    report["aggregate"] = aggregate_description(pipe.predictor)
    report["model_line"] = model_line(pipe.predictor, pipe.air_rule)
    report["front_end"] = {k: fronts.count(k) for k in sorted(set(fronts))}
    report["window"] = regression_report(win_pred, win_true)
    report["split"] = split
    report["excluded_seen_subject_recordings"] = len(seen)
    report["per_device"] = {
        d: regression_report([p for p, dd in zip(rec_pred, devices) if dd == d], [t for t, dd in zip(rec_true, devices) if dd == d])
        for d in sorted(set(devices))
    }
    report.update(model=pipe.model["name"], checkpoint=pipe.model["checkpoint"], checkpoint_sha256=pipe.model["sha256"])
    if None not in flags:
        report["uncertain"] = split_by_doubt(rec_pred, rec_true, flags)
    if short is not None:
        report["short_clip_model"] = {k: short.model[k] for k in ("name", "checkpoint", "sha256")}
        report["per_model"] = {
            m: regression_report([p for p, u in zip(rec_pred, used) if u == m], [t for t, u in zip(rec_true, used) if u == m])
            for m in sorted(set(used))}
    return report


def split_by_doubt(pred: list[float], true: list[float], flagged: list[bool]) -> dict[str, Any]:
    """``n_flagged``, ``fraction`` (flagged share) and the regression reports (bpm) of the
    ``confident`` and the ``flagged`` recordings (None where there are none)."""
    parts = {name: ([p for p, f in zip(pred, flagged) if f == want], [t for t, f in zip(true, flagged) if f == want])
             for name, want in (("confident", False), ("flagged", True))}
    out: dict[str, Any] = {"n_flagged": int(sum(flagged)), "fraction": float(np.mean(flagged))}
    out.update({name: regression_report(*pt) if pt[0] else None for name, pt in parts.items()})
    return out


def model_line(predictor: RatePredictor, air_rule: str = "air_dsp") -> str:
    """The model in one short line (the long form: :func:`aggregate_description`), with what it
    does on air-microphone audio (``air_rule``, :data:`pulmo.resp_rate.air.AIR_RULES`)."""
    if isinstance(predictor, VotePredictor):
        kinds = {type(m).__name__ for m in predictor.members}
        what = f"vote of {len(predictor.members)} " + ("composites" if kinds == {"CompositePredictor"} else "networks")
    else:
        what = "composite of 2 networks" if isinstance(predictor, CompositePredictor) else "one network"
    air = {"air_dsp": "band-envelope harmonic sum", "air_networks": "networks trained for air audio",
           "median": "median of air-trained networks, band-envelope and baseline harmonic sums"}[air_rule]
    return f"{what}, {predictor.clip.window_s:g} s windows; air-microphone audio (>= 8 kHz with power above 3 kHz): {air}"


def aggregate_description(predictor: RatePredictor, weight: bool = True) -> str:
    """How the predictor turns a recording into one rate, in words (a vote's members described
    once where they agree; ``weight``: name the spectrum weight)."""
    if isinstance(predictor, VotePredictor):
        n = len(predictor.members)
        kinds = list(dict.fromkeys(aggregate_description(m, weight=False) for m in predictor.members))
        members = "; ".join(kinds) if len(kinds) > 1 else kinds[0]  # said once where the members agree
        weights = [m.clip.posterior_weight for m in predictor.members]
        if any(w is not None for w in weights):  # see pooled_distribution
            return (f"the envelope-spectrum peak that best fits the pooled rate distributions of {n} models (the median of "
                    f"their recording rates where any model has none), each: {members} (spectrum weights "
                    + ", ".join("-" if w is None else f"{w:g}" for w in weights) + ")")
        return f"median of the recording rates of {n} models, each: " + members
    clip = predictor.clip
    gate = ""
    if isinstance(predictor, CompositePredictor):
        heavy = "heavy" if predictor.heavy_above_bpm is None else f"heavy with its rate above {predictor.heavy_above_bpm:g} bpm"
        gate = (f" (window rates from the rate member, or from the breathing member where it calls the window none or {heavy}"
                + (f" or reads above {predictor.gate_above_bpm:g} bpm)" if predictor.gate_above_bpm is not None else ")"))
    if clip.posterior_weight is not None:
        how = (f"the envelope-spectrum peak that best fits the mean rate distribution of {clip.window_s:g} s windows every "
               f"{clip.hop_s:g} s{gate}" + (f" (spectrum weight {clip.posterior_weight:g})" if weight else "")
               + ("; where most windows are the breathing member's, its own rate" if gate else ""))
    else:
        how = (f"{clip.aggregate} of {clip.window_s:g} s windows every {clip.hop_s:g} s{gate}"
               + (f", refined by the envelope spectrum within ±{100 * clip.refine_tolerance:.0f} %" if clip.refine_tolerance > 0 else ""))
    return how + (", three-halves check" if clip.three_halves_check else "")


def plot_track(track: RateTrack, samples: np.ndarray, sample_rate_hz: int, dest: str | Path | BinaryIO) -> None:
    """Draw the rate track over the recording's spectrogram as a PNG into ``dest`` (a path or a
    binary file object). Uses Matplotlib's object API (no pyplot state), so threads may call it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.specgram(samples, NFFT=256, Fs=sample_rate_hz, noverlap=128, cmap="magma")
    ax1.set_ylabel("Hz")
    ax1.set_title(f"{track.rate_bpm:.1f} breaths/min")  # not the file name: in the service that is a storage name
    mid = [(w.start_s + w.end_s) / 2 for w in track.windows]
    ax2.plot(mid, [w.rate_bpm for w in track.windows], "o-", ms=3,
             label="rate (window)" if track.rate_source in ("networks", "air_networks") else "networks' rate (window)")
    heavy = [(m, w.rate_bpm) for m, w in zip(mid, track.windows) if w.heavy]
    if heavy:
        ax2.plot(*zip(*heavy), "r^", label="heavy breathing")
    noisy = [(m, w.rate_bpm) for m, w in zip(mid, track.windows) if w.noisy]
    if noisy:
        ax2.plot(*zip(*noisy), "kx", label="noisy")
    ax2.axhline(track.rate_bpm, ls="--", c="gray", label=f"recording {track.rate_bpm:.1f} bpm"
                + (f" ({track.rate_source})" if track.front_end == "air" else ""))
    ax2.set_ylabel("breaths / min")
    ax2.set_xlabel("time (s)")
    ax2.legend(loc="upper right", fontsize=8)
    fig.savefig(dest, dpi=100, format="png")
