"""Lung sounds at the front door: per-cycle classes, and a spectrogram with a timeline of
crackle and wheeze probability under it."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulmo.frontdoor.capabilities import (CAPABILITIES, Analysis, Figure, PipelineCache, Table, check_options,
                                         trivial_rule_warnings)

if TYPE_CHECKING:  # torch is imported on first use, so listing capabilities stays light
    from pulmo.inference.lung_sounds import LungSoundPipeline, RecordingResult


class LungSoundsCapability:
    """Adapter from :class:`LungSoundPipeline` to the front door."""

    name = "lung-sounds"
    kinds = frozenset({"audio"})
    options: tuple[str, ...] = ("annotation", "unannotated")

    def __init__(self) -> None:
        self.pipelines = PipelineCache(self.name, _load_pipeline)

    def analyze(self, path: Path, checkpoint: str | None = None, options: Mapping[str, Any] | None = None) -> Analysis:
        """Cycles from an ICBHI annotation (``options["annotation"]``, or a ``.txt`` beside the
        audio), else from the automatic segmenter (``options["unannotated"]="segmenter"``, the
        default) or sliding windows of the model's cycle length (``"windows"``); one
        probability per class each."""
        options = check_options(self.name, self.options, options)
        pipe, checkpoint_sha256 = self.pipelines.get(checkpoint)
        res = pipe.analyze_file(path, annotation=options.get("annotation"),
                                unannotated=options.get("unannotated") or "segmenter")
        result = res.to_dict()
        result["model"]["sha256"] = checkpoint_sha256  # the front door reports full hashes
        test = pipe.bundle.get("metrics", {}).get("test", {})
        if "score" in test:
            result["model"]["evaluation"] = (
                f"ICBHI 2017 official test split, covered subset (n={test.get('n', '?')} cycles): sensitivity "
                f"{test['sensitivity']:.2f}, specificity {test['specificity']:.2f}, ICBHI score {test['score']:.2f} "
                "(0.50 is what calling every cycle normal scores)")
        del result["path"]  # the envelope names the input; a server's storage path is not the user's business
        labels = pipe.labels
        counts = {lab: sum(c.label == lab for c in res.cycles) for lab in labels}
        found = ", ".join(f"{n} {lab}" for lab, n in counts.items() if n)
        headline = f"{len(res.cycles)} cycles from {res.segmentation}; predicted: {found}"
        table = Table(
            columns=["start s", "end s", "predicted", *labels, "annotated"],
            rows=[[c.start_s, c.end_s, c.label, *[c.probabilities[k] for k in labels], c.annotated_label or "-"]
                  for c in res.cycles],
        )
        figure = Figure("timeline", timeline_png(path, pipe, res), "Spectrogram (band-passed, at the model's sample rate) "
                        "and the probability of crackles and wheezes per cycle (a cycle labelled 'both' counts for both).")
        return Analysis(self.name, headline, result, table, [figure], reliability_warnings(test))


#: the ICBHI score of a classifier that calls every cycle normal (sensitivity 0, specificity 1)
TRIVIAL_ICBHI_SCORE = 0.5


def reliability_warnings(test: Mapping[str, Any]) -> list[str]:
    """A warning where the model's stored official-test ICBHI score is no better than calling every
    cycle normal (none where it is better, or where no test score is stored)."""
    return trivial_rule_warnings(test.get("score"), TRIVIAL_ICBHI_SCORE,
                                 "this lung-sound model's ICBHI score on the 2017 official test is",
                                 "calling every cycle normal", "cycle labels")


def _load_pipeline(checkpoint: str | None) -> LungSoundPipeline:
    from pulmo.inference.lung_sounds import LungSoundPipeline

    return LungSoundPipeline.from_checkpoint(checkpoint)


def adventitious_probabilities(probabilities: Mapping[str, float]) -> tuple[float, float]:
    """``(p_crackle, p_wheeze)`` from one cycle's class probabilities: a ``both`` cycle has both.

    >>> adventitious_probabilities({"normal": 0.1, "crackle": 0.2, "wheeze": 0.3, "both": 0.4})
    (0.6000000000000001, 0.7)
    """
    both = probabilities.get("both", 0.0)
    return probabilities.get("crackle", 0.0) + both, probabilities.get("wheeze", 0.0) + both


def timeline_png(path: Path, pipe: LungSoundPipeline, res: RecordingResult) -> bytes:
    """Two panels sharing time (s): log spectrogram of the band-passed audio; crackle and
    wheeze probability per cycle as horizontal segments over each cycle's span."""
    from matplotlib.figure import Figure as MplFigure  # object API: no pyplot global state, safe in threads

    from pulmo.data.audio_io import read_audio
    from pulmo.data.cycles import preprocess

    samples, sr = read_audio(path, sample_rate_hz=pipe.audio.sample_rate_hz)  # decoded at the model's rate, in blocks
    clean = preprocess(samples, sr, pipe.audio)
    rate = pipe.audio.sample_rate_hz
    fig = MplFigure(figsize=(10, 4.6), dpi=100, layout="constrained")
    ax_spec, ax_p = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    nfft = 256 if rate <= 8000 else 1024
    ax_spec.specgram(clean + 1e-9, NFFT=nfft, Fs=rate, noverlap=nfft // 2, cmap="magma")
    ax_spec.set_ylabel("frequency (Hz)")
    ax_spec.set_title(f"{len(res.cycles)} cycles from {res.segmentation}")
    for c in res.cycles:
        pc, pw = adventitious_probabilities(c.probabilities)
        ax_p.hlines(pc, c.start_s, c.end_s, colors="tab:red", linewidth=3)
        ax_p.hlines(pw, c.start_s, c.end_s, colors="tab:blue", linewidth=3)
        ax_spec.axvline(c.start_s, color="white", linewidth=0.5, alpha=0.5)
    ax_p.plot([], [], color="tab:red", linewidth=3, label="crackle")
    ax_p.plot([], [], color="tab:blue", linewidth=3, label="wheeze")
    ax_p.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax_p.set_ylim(-0.02, 1.02)
    ax_p.set_xlim(0, len(clean) / rate)
    ax_p.set_ylabel("probability")
    ax_p.set_xlabel("time (s)")
    ax_p.legend(loc="upper right", ncols=2, fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


CAPABILITIES.add(LungSoundsCapability.name, LungSoundsCapability())

__all__ = ["LungSoundsCapability", "TRIVIAL_ICBHI_SCORE", "adventitious_probabilities", "reliability_warnings", "timeline_png"]
