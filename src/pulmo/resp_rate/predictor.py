"""What turns a recording into per-window predictions: one network, or a composite of two.

The composite exists because one network could not do both jobs well here. A network
trained on real paced breathing only (RRuJO, 8-20 bpm) gives the best rates on real
recordings but never saw heavy breathing or silence; a network that also learned the
none and heavy classes (from synthetic and time-compressed clips) flags them, at a cost
in rate accuracy on real recordings. The composite lets the *breathing* member decide
what kind of breathing each window holds and takes its rate wherever that lies outside
the *rate* member's range; elsewhere the rate member gives the rate.

A composite checkpoint is a project checkpoint (:mod:`pulmo.engine.checkpoint`) with no
weights of its own and ``composite = {"rate": bundle, "breathing": bundle,
"gate_above_bpm": float | None}``, each bundle a whole resp-rate checkpoint dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pulmo.data.adapters.synthetic_breath import BREATH_CLASSES
from pulmo.engine.checkpoint import write_checkpoint
from pulmo.errors import CheckpointError
from pulmo.resp_rate.config import ClipConfig
from pulmo.resp_rate.net import RateNet, WindowPredictions, build_from_rr_checkpoint, predict_windows

NORMAL = BREATH_CLASSES.index("normal")


class RatePredictor(Protocol):
    """Anything with a clip config (rate, window, hop, aggregate, refinement) and a
    ``windows(samples)`` that predicts every window of a recording at ``clip.sample_rate_hz``."""

    clip: ClipConfig

    def windows(self, samples: np.ndarray) -> WindowPredictions: ...


@dataclass
class NetPredictor:
    """One :class:`RateNet` applied in windows of ``clip.window_s`` every ``clip.hop_s``."""

    net: RateNet
    clip: ClipConfig

    def windows(self, samples: np.ndarray) -> WindowPredictions:
        return predict_windows(self.net, samples, self.clip)


def gate_windows(rate: WindowPredictions, breathing: WindowPredictions, gate_above_bpm: float | None) -> WindowPredictions:
    """Combine two members' predictions of the same windows: the breathing member's classes
    and noise probabilities everywhere; its rate and count in windows it calls none or heavy,
    or (``gate_above_bpm`` not None) where its rate exceeds ``gate_above_bpm``; the rate
    member's rate and count elsewhere. Shapes as :class:`WindowPredictions` ``(W,)``."""
    if not np.array_equal(rate.starts_s, breathing.starts_s) or rate.window_s != breathing.window_s:
        raise CheckpointError("composite members must score the same windows (window, hop and rate differ)")
    use = breathing.breath_probs.argmax(1) != NORMAL
    if gate_above_bpm is not None:
        use |= breathing.rate_bpm > gate_above_bpm
    return WindowPredictions(
        starts_s=breathing.starts_s, window_s=breathing.window_s,
        rate_bpm=np.where(use, breathing.rate_bpm, rate.rate_bpm), count=np.where(use, breathing.count, rate.count),
        breath_probs=breathing.breath_probs, noise_probs=breathing.noise_probs,
    )


@dataclass
class CompositePredictor:
    """The rate member's rate where the breathing member sees normal breathing within the
    rate member's range, the breathing member's elsewhere (:func:`gate_windows`). The clip
    config, the refinement tolerance included, is the rate member's."""

    rate: NetPredictor
    breathing: NetPredictor
    gate_above_bpm: float | None = None

    def __post_init__(self) -> None:
        a, b = self.rate.clip, self.breathing.clip
        fields = ("sample_rate_hz", "window_s", "hop_s", "min_s")
        if any(getattr(a, f) != getattr(b, f) for f in fields):
            raise CheckpointError("composite members must share " + ", ".join(fields) + ": "
                                  + "; ".join(f"{f} {getattr(a, f)} vs {getattr(b, f)}" for f in fields))

    @property
    def clip(self) -> ClipConfig:
        return self.rate.clip

    def windows(self, samples: np.ndarray) -> WindowPredictions:
        return gate_windows(self.rate.windows(samples), self.breathing.windows(samples), self.gate_above_bpm)


def predictor_from_checkpoint(bundle: Mapping[str, Any]) -> NetPredictor | CompositePredictor:
    """The predictor a checkpoint dict describes (fp32, eval mode)."""
    parts = bundle.get("composite")
    if parts is None:
        return NetPredictor(*build_from_rr_checkpoint(dict(bundle)))
    if bundle.get("task") != "resp-rate" or not {"rate", "breathing"} <= set(parts):
        raise CheckpointError("a composite resp-rate checkpoint needs 'rate' and 'breathing' members")
    return CompositePredictor(NetPredictor(*build_from_rr_checkpoint(parts["rate"])),
                              NetPredictor(*build_from_rr_checkpoint(parts["breathing"])), parts.get("gate_above_bpm"))


def breathing_bundle(bundle: Mapping[str, Any]) -> Mapping[str, Any]:
    """The checkpoint dict whose network decides the breathing class (the member of a composite)."""
    parts = bundle.get("composite")
    return parts["breathing"] if parts else bundle


def save_composite(path: str | Path, name: str, rate: dict[str, Any], breathing: dict[str, Any],
                   gate_above_bpm: float | None, metrics: dict[str, Any]) -> Path:
    """Write a composite checkpoint from two resp-rate checkpoint dicts. ``metrics`` should hold
    the composite's own scores; its ``subjects`` default to the union of the members'."""
    for role, b in (("rate", rate), ("breathing", breathing)):
        if b.get("task") != "resp-rate" or "composite" in b:
            raise CheckpointError(f"the {role} member must be a single-network resp-rate checkpoint")
    seen = {split: sorted(set(rate.get("metrics", {}).get("subjects", {}).get(split, []))
                          | set(breathing.get("metrics", {}).get("subjects", {}).get(split, [])))
            for split in ("train", "val")}
    metrics = {"subjects": seen, **metrics}
    fields = {"task": "resp-rate", "name": name, "labels": list(BREATH_CLASSES),
              "composite": {"rate": rate, "breathing": breathing, "gate_above_bpm": gate_above_bpm}}
    config = {"rate_member": rate.get("name"), "breathing_member": breathing.get("name"), "gate_above_bpm": gate_above_bpm}
    return write_checkpoint(path, fields, {}, metrics, config)
