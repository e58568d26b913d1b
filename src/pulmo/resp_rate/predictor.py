"""What turns a recording into per-window predictions and a rate: one network, a composite
of two, or a vote of several.

The composite exists because one network could not do both jobs well here. A network
trained on real paced breathing only (RRuJO, 8-20 bpm) gives the best rates on real
recordings but never saw heavy breathing or silence; a network that also learned the
none and heavy classes (from synthetic and time-compressed clips) flags them, at a cost
in rate accuracy on real recordings. The composite lets the *breathing* member decide
what kind of breathing each window holds and takes its rate wherever that lies outside
the *rate* member's range; elsewhere the rate member gives the rate.

A vote runs several predictors of one recipe (networks trained with different seeds, or
composites of them). A single training run's recording rate depends on its seed more than on
anything else we varied: each run makes octave slips on different recordings, and the vote
outvotes a slip that only one of them makes. It also removes a choice: shipping one seed
meant picking it on four validation subjects, a pick that did not carry over to new subjects.
Members with a rate-distribution head vote by pooling: the vote's rate is one fit to the mean
of their recordings' distributions (:class:`pulmo.resp_rate.net.RateDistribution`), the way a
deep ensemble averages its members' predictive distributions, so a member that is unsure
between two octaves weighs less than one that is sure. Other members vote by the median of
their recording rates (:func:`vote_rate`).

A composite checkpoint is a project checkpoint (:mod:`pulmo.engine.checkpoint`) with no
weights of its own and ``composite = {"rate": bundle, "breathing": bundle,
"gate_above_bpm": float | None, "heavy_above_bpm": float | None}`` (the second may be
absent: None), each bundle a whole single-network resp-rate checkpoint
dict; a vote checkpoint likewise holds ``vote = [bundle, ...]``, each a single-network or
composite checkpoint dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pulmo.data.adapters.synthetic_breath import BREATH_CLASSES
from pulmo.engine.checkpoint import checkpoint_dict, save_checkpoint_dict
from pulmo.errors import CheckpointError
from pulmo.resp_rate.config import ClipConfig
from pulmo.resp_rate.doubt import rate_doubt
from pulmo.resp_rate.net import (RateDistribution, RateNet, WindowPredictions, aggregate_rate, build_from_rr_checkpoint,
                                 fitted_rate, mean_rate_distribution, predict_windows, recording_distribution, recording_rate)

NORMAL = BREATH_CLASSES.index("normal")
HEAVY = BREATH_CLASSES.index("heavy")


@dataclass
class RecordingPrediction:
    """A recording's window predictions, its one rate (breaths per minute), the aggregate of
    its window rates that rate was made from (before refinement and check; a vote's: the
    members' median), how far to doubt the rate (:func:`pulmo.resp_rate.doubt.rate_doubt`)
    and the rate distribution of the windows the rate was made from (None: the network has no
    rate-distribution head, or most of those windows are another network's)."""

    windows: WindowPredictions
    rate_bpm: float
    aggregate_bpm: float
    doubt: float
    distribution: RateDistribution | None = None


class RatePredictor(Protocol):
    """Anything with a clip config (rate, window, hop, aggregate, refinement), a
    ``windows(samples)`` that predicts every window of a recording at ``clip.sample_rate_hz``,
    and a ``predict(samples)`` that adds the recording's rate."""

    @property
    def clip(self) -> ClipConfig: ...

    def windows(self, samples: np.ndarray) -> WindowPredictions: ...

    def predict(self, samples: np.ndarray) -> RecordingPrediction: ...


def predict_with_own_clip(predictor: RatePredictor, samples: np.ndarray) -> RecordingPrediction:
    """A predictor's windows and the recording rate its own clip config makes of them."""
    w = predictor.windows(samples)
    return made_from(samples, w, w, predictor.clip)


def made_from(samples: np.ndarray, shown: WindowPredictions, source: WindowPredictions, clip: ClipConfig) -> RecordingPrediction:
    """One predictor's recording prediction: windows ``shown``, the rate ``clip`` makes of the
    windows ``source`` (the same ones but for a composite's, see :func:`composite_rate_source`)
    and the doubt of that rate."""
    rate, aggregate = recording_rate(samples, source, clip), aggregate_rate(source.rate_bpm, clip.aggregate)
    return RecordingPrediction(shown, rate, aggregate, rate_doubt([rate], [shown.rate_bpm], [aggregate]),
                               recording_distribution(source, clip))


@dataclass
class NetPredictor:
    """One :class:`RateNet` applied in windows of ``clip.window_s`` every ``clip.hop_s``."""

    net: RateNet
    clip: ClipConfig

    def windows(self, samples: np.ndarray) -> WindowPredictions:
        return predict_windows(self.net, samples, self.clip)

    def predict(self, samples: np.ndarray) -> RecordingPrediction:
        return predict_with_own_clip(self, samples)


def gate_windows(rate: WindowPredictions, breathing: WindowPredictions, gate_above_bpm: float | None,
                 heavy_above_bpm: float | None = None) -> WindowPredictions:
    """Combine two members' predictions of the same windows: the breathing member's classes
    and noise probabilities everywhere; its rate and count in windows it calls none or heavy
    (with ``heavy_above_bpm`` not None, a heavy call counts only where its own rate is above
    it: heavy breathing is a rate above 25 bpm, so a heavy call at a lower rate contradicts
    itself, and such a window takes the rate member's classes too), or (``gate_above_bpm`` not
    None) where its rate exceeds ``gate_above_bpm``; the rate member's rate and count elsewhere,
    and its rate distributions there (rows of NaN where the breathing member's rate is taken). Shapes as :class:`WindowPredictions` ``(W,)``."""
    if not np.array_equal(rate.starts_s, breathing.starts_s) or rate.window_s != breathing.window_s:
        raise CheckpointError("composite members must score the same windows (window, hop and rate differ)")
    calls = breathing.breath_probs.argmax(1)
    use = calls != NORMAL
    breath_probs = breathing.breath_probs
    if heavy_above_bpm is not None:
        contradicted = (calls == HEAVY) & (breathing.rate_bpm <= heavy_above_bpm)
        use &= ~contradicted
        breath_probs = np.where(contradicted[:, None], rate.breath_probs, breathing.breath_probs)
    if gate_above_bpm is not None:
        use |= breathing.rate_bpm > gate_above_bpm
    return WindowPredictions(
        starts_s=breathing.starts_s, window_s=breathing.window_s,
        rate_bpm=np.where(use, breathing.rate_bpm, rate.rate_bpm), count=np.where(use, breathing.count, rate.count),
        breath_probs=breath_probs, noise_probs=breathing.noise_probs,
        rate_probs=None if rate.rate_probs is None else np.where(use[:, None], np.nan, rate.rate_probs),
        rate_bins_bpm=rate.rate_bins_bpm,
    )


@dataclass
class CompositePredictor:
    """The rate member's rate where the breathing member sees normal breathing within the
    rate member's range, the breathing member's elsewhere (:func:`gate_windows`). The clip
    config, the refinement tolerance included, is the rate member's (but see
    :func:`composite_rate_source`)."""

    rate: NetPredictor
    breathing: NetPredictor
    gate_above_bpm: float | None = None
    heavy_above_bpm: float | None = None

    def __post_init__(self) -> None:
        check_same_windows("composite", [self.rate.clip, self.breathing.clip])

    @property
    def clip(self) -> ClipConfig:
        return self.rate.clip

    def windows(self, samples: np.ndarray) -> WindowPredictions:
        return gate_windows(self.rate.windows(samples), self.breathing.windows(samples), self.gate_above_bpm,
                            self.heavy_above_bpm)

    def predict(self, samples: np.ndarray) -> RecordingPrediction:
        breathing = self.breathing.windows(samples)
        gated = gate_windows(self.rate.windows(samples), breathing, self.gate_above_bpm, self.heavy_above_bpm)
        return made_from(samples, gated, *composite_rate_source(gated, breathing, self.clip, self.breathing.clip))


def composite_rate_source(gated: WindowPredictions, breathing: WindowPredictions, rate_clip: ClipConfig,
                          breathing_clip: ClipConfig) -> tuple[WindowPredictions, ClipConfig]:
    """The windows and clip config a composite's recording rate is made from. Normally its
    gated windows (:func:`gate_windows`) with the rate member's config. A rate member that fits
    a rate distribution (``posterior_weight``) can only fit its own windows: where most were
    handed to the breathing member, the recording is the breathing member's, and its own
    windows and config (its refinement) give the rate."""
    if rate_clip.posterior_weight is not None and mean_rate_distribution(gated) is None:
        return breathing, breathing_clip
    return gated, rate_clip


WINDOW_FIELDS = ("sample_rate_hz", "window_s", "hop_s", "min_s")


def check_same_windows(what: str, clips: list[ClipConfig]) -> None:
    """``CheckpointError`` unless every clip config cuts a recording into the same windows."""
    for other in clips[1:]:
        if any(getattr(clips[0], f) != getattr(other, f) for f in WINDOW_FIELDS):
            raise CheckpointError(f"{what} members must share " + ", ".join(WINDOW_FIELDS) + ": "
                                  + "; ".join(f"{f} {getattr(clips[0], f)} vs {getattr(other, f)}" for f in WINDOW_FIELDS))


def vote_windows(windows: list[WindowPredictions]) -> WindowPredictions:
    """Members' predictions of the same windows merged: median rate and count, mean class and
    noise probabilities (and rate distributions, where every member has them on the same
    bins; a window's distribution is the mean of the members' own ones). Shapes as
    :class:`WindowPredictions`."""
    first = windows[0]
    if any(not np.array_equal(w.starts_s, first.starts_s) or w.window_s != first.window_s for w in windows[1:]):
        raise CheckpointError("vote members must score the same windows (window, hop and rate differ)")
    bins = first.rate_bins_bpm
    shared = bins is not None and all(w.rate_probs is not None and np.array_equal(w.rate_bins_bpm, bins) for w in windows)
    return WindowPredictions(
        starts_s=first.starts_s, window_s=first.window_s,
        rate_bpm=np.median([w.rate_bpm for w in windows], axis=0), count=np.median([w.count for w in windows], axis=0),
        breath_probs=np.mean([w.breath_probs for w in windows], axis=0),
        noise_probs=np.mean([w.noise_probs for w in windows], axis=0),
        rate_probs=mean_ignoring_nan([w.rate_probs for w in windows]) if shared else None,  # type: ignore[misc]
        rate_bins_bpm=bins if shared else None,
    )


def mean_ignoring_nan(arrays: list[np.ndarray]) -> np.ndarray:
    """Element-wise mean over ``arrays`` of one shape, NaN entries left out (NaN where all are)."""
    stack = np.stack(arrays)
    count = (~np.isnan(stack)).sum(axis=0)
    total = np.nansum(stack, axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pooled_distribution(distributions: list[RateDistribution | None]) -> RateDistribution | None:
    """Several members' distributions of one recording on the same bins, pooled: their mean,
    the median of the spectrum weights their networks chose and the highest of their caps (a
    member that learned heavy breathing may take the vote there; one that never did puts
    little probability there). None if any member has none, the bins differ, or no member's
    network chose a weight."""
    first = distributions[0] if distributions else None
    if first is None or any(d is None or not np.array_equal(d.bins_bpm, first.bins_bpm) for d in distributions):
        return None
    given = [d for d in distributions if d is not None]
    weights = [d.weight for d in given if d.weight is not None]
    if not weights:
        return None
    return RateDistribution(np.mean([d.probs for d in given], axis=0), first.bins_bpm, float(np.median(weights)),
                            max(d.max_bpm for d in given))


def vote_rate(samples: np.ndarray, sample_rate_hz: int, rates: list[float], distributions: list[RateDistribution | None]) -> float:
    """A vote's recording rate (bpm) from its members' ``rates`` and rate ``distributions``:
    the fit to the pooled distribution (:func:`pooled_distribution`) where there is one,
    otherwise the median of the rates."""
    pooled = pooled_distribution(distributions)
    return fitted_rate(samples, sample_rate_hz, pooled) if pooled is not None else float(np.median(rates))


@dataclass
class VotePredictor:
    """Several predictors of one recipe; each makes its own recording rate (with its own
    refinement and check) and the vote's rate is :func:`vote_rate` of them: the fit to their
    pooled rate distributions where every member has one, otherwise the median of their rates.
    Its windows are the members' merged by :func:`vote_windows`; ``clip`` is the first
    member's (windows are shared)."""

    members: list[NetPredictor | CompositePredictor]

    def __post_init__(self) -> None:
        if not self.members:
            raise CheckpointError("a vote needs at least one member")
        check_same_windows("vote", [m.clip for m in self.members])

    @property
    def clip(self) -> ClipConfig:
        return self.members[0].clip

    def windows(self, samples: np.ndarray) -> WindowPredictions:
        return vote_windows([m.windows(samples) for m in self.members])

    def predict(self, samples: np.ndarray) -> RecordingPrediction:
        preds = [m.predict(samples) for m in self.members]
        rates, aggregates = [p.rate_bpm for p in preds], [p.aggregate_bpm for p in preds]
        distributions = [p.distribution for p in preds]
        return RecordingPrediction(vote_windows([p.windows for p in preds]),
                                   vote_rate(samples, self.clip.sample_rate_hz, rates, distributions), float(np.median(aggregates)),
                                   rate_doubt(rates, [p.windows.rate_bpm for p in preds], aggregates), pooled_distribution(distributions))


def predictor_from_checkpoint(bundle: Mapping[str, Any]) -> NetPredictor | CompositePredictor | VotePredictor:
    """The predictor a checkpoint dict describes (fp32, eval mode)."""
    if bundle.get("task") != "resp-rate":
        raise CheckpointError(f"checkpoint is for task {bundle.get('task')!r}, not 'resp-rate'")
    if "vote" in bundle:
        members = [predictor_from_checkpoint(b) for b in bundle["vote"]]
        if any(isinstance(m, VotePredictor) for m in members):
            raise CheckpointError("a vote's members must be single networks or composites, not votes")
        return VotePredictor(members)  # type: ignore[arg-type]
    parts = bundle.get("composite")
    if parts is None:
        return NetPredictor(*build_from_rr_checkpoint(dict(bundle)))
    if not {"rate", "breathing"} <= set(parts):
        raise CheckpointError("a composite resp-rate checkpoint needs 'rate' and 'breathing' members")
    return CompositePredictor(NetPredictor(*build_from_rr_checkpoint(parts["rate"])),
                              NetPredictor(*build_from_rr_checkpoint(parts["breathing"])), parts.get("gate_above_bpm"),
                              parts.get("heavy_above_bpm"))


def checkpoint_clip(bundle: Mapping[str, Any]) -> ClipConfig:
    """The clip config a single-network or composite checkpoint dict scores with (a
    composite's is its rate member's), read without building the networks."""
    parts = bundle.get("composite")
    return ClipConfig(**(parts["rate"] if parts else bundle)["audio"])


def breathing_bundle(bundle: Mapping[str, Any]) -> Mapping[str, Any]:
    """The checkpoint dict whose network decides the breathing class (the member of a
    composite; a vote's first member's)."""
    if "vote" in bundle:
        return breathing_bundle(bundle["vote"][0])
    parts = bundle.get("composite")
    return parts["breathing"] if parts else bundle


def composite_checkpoint(name: str, rate: dict[str, Any], breathing: dict[str, Any], gate_above_bpm: float | None,
                         metrics: dict[str, Any], heavy_above_bpm: float | None = None) -> dict[str, Any]:
    """A composite checkpoint dict from two single-network resp-rate checkpoint dicts (the
    gate: :func:`gate_windows`). ``metrics`` should hold the composite's own scores; its
    ``subjects`` default to the union of the members'."""
    for role, b in (("rate", rate), ("breathing", breathing)):
        if b.get("task") != "resp-rate" or "composite" in b or "vote" in b:
            raise CheckpointError(f"the {role} member must be a single-network resp-rate checkpoint")
    check_same_windows("composite", [checkpoint_clip(rate), checkpoint_clip(breathing)])
    fields = {"task": "resp-rate", "name": name, "labels": list(BREATH_CLASSES),
              "composite": {"rate": rate, "breathing": breathing, "gate_above_bpm": gate_above_bpm,
                            "heavy_above_bpm": heavy_above_bpm}}
    config = {"rate_member": rate.get("name"), "breathing_member": breathing.get("name"), "gate_above_bpm": gate_above_bpm,
              "heavy_above_bpm": heavy_above_bpm}
    return checkpoint_dict(fields, {}, {"subjects": seen_subjects([rate, breathing]), **metrics}, config)


def vote_checkpoint(name: str, members: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    """A vote checkpoint dict from single-network or composite resp-rate checkpoint dicts
    (their windows must agree). ``metrics`` should hold the vote's own scores; its ``subjects``
    default to the union of the members'."""
    if not members or any(b.get("task") != "resp-rate" or "vote" in b for b in members):
        raise CheckpointError("vote members must be single-network or composite resp-rate checkpoints")
    check_same_windows("vote", [checkpoint_clip(b) for b in members])
    fields = {"task": "resp-rate", "name": name, "labels": list(BREATH_CLASSES), "vote": members}
    return checkpoint_dict(fields, {}, {"subjects": seen_subjects(members), **metrics},
                           {"members": [b.get("name") for b in members]})


def save_composite(path: str | Path, name: str, rate: dict[str, Any], breathing: dict[str, Any],
                   gate_above_bpm: float | None, metrics: dict[str, Any]) -> Path:
    """Write :func:`composite_checkpoint` to ``path``."""
    return save_checkpoint_dict(path, composite_checkpoint(name, rate, breathing, gate_above_bpm, metrics))


def save_vote(path: str | Path, name: str, members: list[dict[str, Any]], metrics: dict[str, Any]) -> Path:
    """Write :func:`vote_checkpoint` to ``path``."""
    return save_checkpoint_dict(path, vote_checkpoint(name, members, metrics))


def seen_subjects(bundles: list[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The union of checkpoints' training and validation subjects."""
    return {split: sorted({s for b in bundles for s in b.get("metrics", {}).get("subjects", {}).get(split, [])})
            for split in ("train", "val")}
