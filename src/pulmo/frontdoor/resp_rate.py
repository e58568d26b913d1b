"""Respiratory rate at the front door: the rate track over time, heavy-breathing and noise flags."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulmo.frontdoor.capabilities import CAPABILITIES, Analysis, Figure, PipelineCache, Table, check_options

if TYPE_CHECKING:  # torch is imported on first use, so listing capabilities stays light
    from pulmo.inference.resp_rate import RateTrack, RespRatePipeline


#: How the headline names each air rule (:data:`pulmo.resp_rate.air.AIR_RULES`).
AIR_SOURCES = {"air_dsp": "the air-band envelope spectrum", "air_networks": "networks trained for air audio",
               "median": "the median of the air-band spectrum, the air-trained networks and the baseline"}


class RespRateCapability:
    """Adapter from :class:`RespRatePipeline` to the front door."""

    name = "resp-rate"
    kinds = frozenset({"audio"})
    options: tuple[str, ...] = ("windows",)

    def __init__(self) -> None:
        self.pipelines = PipelineCache(self.name, _load_pipeline)

    def analyze(self, path: Path, checkpoint: str | None = None, options: Mapping[str, Any] | None = None) -> Analysis:
        """Breaths per minute in windows of the model's clip length across the recording, the
        recording's rate, the share of windows with heavy breathing and the noise flag.

        The result's ``windows`` always lists every window; the table a person reads (command
        line, HTML report) holds the estimators' rates, or every window with ``options["windows"]``
        true."""
        options = check_options(self.name, self.options, options)
        from pulmo.errors import AudioTooShortError
        from pulmo.inference.bundled import resp_rate_short_checkpoint

        pipe, checkpoint_sha256 = self.pipelines.get(checkpoint)
        try:
            samples = pipe.load(path)
        except AudioTooShortError:  # too short for the default model: the bundled short-clip model takes it
            short = resp_rate_short_checkpoint()
            if checkpoint is not None or short is None:
                raise
            pipe, checkpoint_sha256 = self.pipelines.get(str(short))
            samples = pipe.load(path)
        track = pipe.analyze_file(path, samples)
        result = track.to_dict()
        del result["path"]  # the envelope names the input
        result["model"]["sha256"] = checkpoint_sha256
        evaluation = evaluation_summary(pipe.metrics)
        if evaluation:
            result["model"]["evaluation"] = evaluation
        heavy = (f"heavy breathing in {100 * track.heavy_fraction:.0f} % of windows" if track.heavy_assessed else
                 "heavy breathing not assessed (this model was trained without rates in the heavy range)")
        doubt = (" (uncertain: the true rate may be half, double or two thirds of it; count the breaths to confirm)"
                 if track.rate_uncertain else "")
        spread = (f" (windows {track.rate_interval_bpm[0]:.1f}-{track.rate_interval_bpm[1]:.1f})"
                  if track.rate_interval_bpm and track.rate_interval_bpm[0] != track.rate_interval_bpm[1] else "")
        source = ("; air microphone: rate from " + AIR_SOURCES[track.rate_source] if track.front_end == "air" else "")
        headline = (f"{track.rate_bpm:.1f} breaths/min{spread}{doubt} over {track.duration_s:.0f} s; {heavy}; "
                    f"{'noisy' if track.noisy else 'clean'} recording{source}")
        wanted = str(options.get("windows", "")).lower() in ("1", "true", "yes")  # the service's options are text
        table = window_table(track) if wanted else member_table(track)
        from pulmo.inference.resp_rate import plot_track

        png = io.BytesIO()
        plot_track(track, samples, pipe.clip.sample_rate_hz, png)
        figure = Figure("rate_track", png.getvalue(), "Spectrogram and the breathing rate per window (heavy breathing: "
                        "red triangles, noisy windows: crosses; dashed: the recording's rate).")
        return Analysis(self.name, headline, result, table, [figure])


def window_table(track: RateTrack) -> Table:
    """One row per window: bounds (s), rate (bpm, 0.1), breaths, breathing class, heavy and noise flags."""
    return Table(columns=["start s", "end s", "breaths/min", "breaths", "breathing", "heavy", "noisy"],
                 rows=[[round(w.start_s, 2), round(w.end_s, 2), round(w.rate_bpm, 1), round(w.breath_count, 2),
                        w.breathing, w.heavy if track.heavy_assessed else "n/a", w.noisy] for w in track.windows])


def member_table(track: RateTrack) -> Table:
    """One row per estimator: its rate (bpm, 0.1) and whether the result is its (none is where
    the result is the median of the air members)."""
    used = {"networks": "networks", "air_dsp": "dsp_air_band", "air_networks": "air_networks"}.get(track.rate_source)
    names = {"networks": "networks", "dsp_stethoscope_band": "harmonic sum, 200-800 Hz (baseline)",
             "dsp_air_band": "harmonic sum of air-band envelopes", "air_networks": "networks trained for air audio"}
    return Table(columns=["estimate", "breaths/min", "reported"],
                 rows=[[names.get(k, k), round(v, 1), k == used] for k, v in track.members.items()])


def evaluation_summary(metrics: Mapping[str, Any]) -> str | None:
    """A checkpoint's stored RRuJO scores in one sentence: its test subjects' (per recording, or
    per clip for the short-clip model) and, where stored, the five-fold cross-validation's; None
    without test scores."""
    clips = "test_clips" in metrics
    test = metrics.get("test_clips" if clips else "test", {})
    if not {"mae", "ccc"} <= set(test):
        return None
    what = f", clips of {'-'.join(f'{s:g}' for s in metrics.get('clip_seconds', []))} s" if clips else ""
    text = (f"RRuJO test subjects{what} (n={test.get('n', '?')} {'clips' if clips else 'recordings'}): "
            f"mean absolute error {test['mae']:.2f} breaths/min, CCC {test['ccc']:.2f}")
    cv = metrics.get("cross_validation_clips" if clips else "cross_validation", {})
    if {"mae", "ccc"} <= set(cv):
        text += f"; five-fold subject cross-validation (n={cv.get('n', '?')}): {cv['mae']:.2f} breaths/min, CCC {cv['ccc']:.2f}"
    return text


def _load_pipeline(checkpoint: str | None) -> RespRatePipeline:
    from pulmo.inference.resp_rate import RespRatePipeline

    return RespRatePipeline.from_checkpoint(checkpoint)


CAPABILITIES.add(RespRateCapability.name, RespRateCapability())

__all__ = ["RespRateCapability"]
