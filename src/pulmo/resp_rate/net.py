"""The respiratory-rate inference graph, window-by-window prediction, and its checkpoints.

A checkpoint uses the project's format (:mod:`pulmo.engine.checkpoint`): one ``torch.save``
dict with ``format``, ``task``, ``name``, ``labels``, ``features``, ``model``,
``state_dict``, ``metrics``, ``config``, ``git_commit``; here ``audio`` holds the clip
config (rate, window, hop, aggregate) and ``rate_scale_bpm`` the regression scale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pulmo.data.adapters.synthetic_breath import BREATH_CLASSES
from pulmo.engine.checkpoint import half_precision, write_checkpoint
from pulmo.errors import CheckpointError, DataError
from pulmo.features import create_features
from pulmo.features.base import FeatureExtractor
from pulmo.models import create_model
from pulmo.resp_rate.config import ClipConfig, RespRateConfig
from pulmo.data.audio_io import window_starts_samples
from pulmo.resp_rate.dsp import posterior_rate, refine_rate, three_halves_check

NOISE_CLASSES: tuple[str, ...] = ("clean", "noisy")


class RateNet(nn.Module):
    """Waveforms ``(B, T)`` -> features ``(B, 1, F, frames)`` -> the model's output dict.

    ``rate`` and ``count`` come out divided by ``rate_scale_bpm`` (count by
    ``rate_scale_bpm * clip.max_s / 60``); :meth:`predict` returns them in bpm and breaths.
    """

    def __init__(self, features: FeatureExtractor, model: nn.Module, rate_scale_bpm: float, count_scale: float) -> None:
        super().__init__()
        self.features, self.model = features, model
        self.rate_scale_bpm, self.count_scale = rate_scale_bpm, count_scale

    def forward(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(self.features(audio))


def build_net(config: RespRateConfig) -> RateNet:
    features = create_features(config.features.name, **{"sample_rate_hz": config.clip.sample_rate_hz, **config.features.params})
    n_mels = features.config.n_mels
    model = create_model(config.model.name, n_mels=n_mels, **config.model.params)
    return RateNet(features, model, config.loss.rate_scale_bpm, config.loss.rate_scale_bpm * config.clip.max_s / 60.0)


@dataclass
class WindowPredictions:
    """Per-window outputs of one recording: ``starts_s`` (W,), ``rate_bpm`` (W,),
    ``count`` (W,), ``breath_probs`` (W, 3), ``noise_probs`` (W, 2); from a network with a
    rate-bin head also ``rate_probs`` (W, K) over the bin centres ``rate_bins_bpm`` (K,)
    (a row of NaN: the window's rate came from elsewhere, see
    :func:`pulmo.resp_rate.predictor.gate_windows`)."""

    starts_s: np.ndarray
    window_s: float
    rate_bpm: np.ndarray
    count: np.ndarray
    breath_probs: np.ndarray
    noise_probs: np.ndarray
    rate_probs: np.ndarray | None = None
    rate_bins_bpm: np.ndarray | None = None


@torch.no_grad()
def predict_windows(net: RateNet, samples: np.ndarray, clip: ClipConfig, batch_size: int = 128) -> WindowPredictions:
    """Slide windows of ``clip.window_s`` every ``clip.hop_s`` over ``samples`` (at
    ``clip.sample_rate_hz``) and predict each. A recording shorter than ``window_s`` but at
    least ``clip.min_s`` long (the shortest training clip) is scored as one window of its own
    length. Raises ``DataError`` if shorter than ``clip.min_s``."""
    sr = clip.sample_rate_hz
    if len(samples) < int(round(clip.min_s * sr)):
        raise DataError(f"audio of {len(samples) / sr:.2f} s is shorter than the model's shortest clip of {clip.min_s:g} s")
    win, hop = min(clip.window_samples, len(samples)), max(int(round(clip.hop_s * sr)), 1)
    starts = window_starts_samples(len(samples), win, hop)
    net.eval()
    outs: dict[str, list[torch.Tensor]] = {"rate": [], "count": [], "breath_logits": [], "noise_logits": [], "rate_bin_logits": []}
    for i in range(0, len(starts), batch_size):
        batch = torch.from_numpy(np.stack([samples[s : s + win] for s in starts[i : i + batch_size]]))
        out = net(batch)
        for k in out:
            outs[k].append(out[k].float())
    cat = {k: torch.cat(v) for k, v in outs.items() if v}
    bins = "rate_bin_logits" in cat
    return WindowPredictions(
        starts_s=np.array(starts) / sr, window_s=win / sr,
        rate_bpm=(cat["rate"] * net.rate_scale_bpm).numpy(), count=(cat["count"] * net.count_scale).numpy(),
        breath_probs=cat["breath_logits"].softmax(1).numpy(), noise_probs=cat["noise_logits"].softmax(1).numpy(),
        rate_probs=cat["rate_bin_logits"].softmax(1).numpy() if bins else None,
        rate_bins_bpm=net.model.rate_bin_bpm.numpy().copy() if bins else None,
    )


def aggregate_rate(rates: np.ndarray, how: str) -> float:
    """One rate for a recording from its windows' rates (``median`` or ``mean``)."""
    return float(np.median(rates) if how == "median" else np.mean(rates))


def mean_rate_distribution(windows: WindowPredictions) -> np.ndarray | None:
    """``(K,)`` the mean of the windows' rate distributions, over the windows whose rate is the
    network's own; None without rate distributions or when fewer than half the windows have one."""
    if windows.rate_probs is None:
        return None
    own = ~np.isnan(windows.rate_probs).any(axis=1)
    return windows.rate_probs[own].mean(axis=0) if 2 * own.sum() >= len(own) else None


@dataclass
class RateDistribution:
    """A recording's rate distribution and how its network fits a rate to it: the mean
    ``probs`` ``(K,)`` of its windows' distributions over the bin centres ``bins_bpm`` ``(K,)``,
    the spectrum ``weight`` (None: the network's own rate is not a fit; its validation chose the
    refinement) and the highest peak ``max_bpm`` allowed (:func:`pulmo.resp_rate.dsp.posterior_rate`)."""

    probs: np.ndarray
    bins_bpm: np.ndarray
    weight: float | None
    max_bpm: float


def mostly_no_breathing(windows: WindowPredictions) -> bool:
    """Whether most windows are classed ``none`` (no breathing)."""
    return 2 * int((windows.breath_probs.argmax(1) == BREATH_CLASSES.index("none")).sum()) > len(windows.breath_probs)


def recording_distribution(windows: WindowPredictions, clip: ClipConfig) -> RateDistribution | None:
    """``windows``' :class:`RateDistribution` under ``clip``; None unless most windows carry
    the network's own rate distribution (:func:`mean_rate_distribution`), and None where most
    windows are classed none: a fit can only return a spectrum peak, a breathing rate, so a
    recording without breathing keeps the aggregate of its window rates (about 0)."""
    probs = mean_rate_distribution(windows)
    if probs is None or mostly_no_breathing(windows):
        return None
    assert windows.rate_bins_bpm is not None
    return RateDistribution(probs, windows.rate_bins_bpm, clip.posterior_weight, clip.posterior_max_bpm)


def fitted_rate(samples: np.ndarray, sample_rate_hz: int, distribution: RateDistribution) -> float:
    """The envelope-spectrum peak of ``samples`` that best fits ``distribution`` (bpm; its
    ``weight`` must be set)."""
    if distribution.weight is None:
        raise ValueError("fitting a rate needs a spectrum weight")
    return posterior_rate(samples, sample_rate_hz, distribution.probs, distribution.bins_bpm, distribution.weight,
                          distribution.max_bpm)


def recording_rate(samples: np.ndarray, windows: WindowPredictions, clip: ClipConfig) -> float:
    """The recording's rate: with ``clip.posterior_weight`` and rate distributions for most
    windows (most of them not classed none), the envelope-spectrum peak that best fits their mean distribution
    (:func:`recording_distribution`, :func:`fitted_rate`); otherwise the aggregate of the window rates,
    refined by the envelope spectrum when ``clip.refine_tolerance`` is positive. Then moved
    to 1.5 x when ``clip.three_halves_check`` and the band envelopes say so (training never
    sets the check after a fit: see ``select_post_processing``)."""
    distribution = recording_distribution(windows, clip) if clip.posterior_weight is not None else None
    if distribution is not None:
        rate = fitted_rate(samples, clip.sample_rate_hz, distribution)
    else:
        rate = aggregate_rate(windows.rate_bpm, clip.aggregate)
        if clip.refine_tolerance > 0:
            rate = refine_rate(samples, clip.sample_rate_hz, rate, clip.refine_tolerance)
    return three_halves_check(samples, clip.sample_rate_hz, rate) if clip.three_halves_check else rate


def save_rr_checkpoint(path: str | Path, net: RateNet, config: RespRateConfig, metrics: dict[str, Any],
                       half: bool = False) -> Path:
    """Write the net and everything needed to use it (see the module docstring)."""
    state = net.state_dict()
    bundle = {
        "task": config.task,
        "name": config.name,
        "labels": list(BREATH_CLASSES),
        "noise_labels": list(NOISE_CLASSES),
        "audio": dataclasses.asdict(config.clip),
        "features": {"name": net.features.name, "params": net.features.config_dict()},
        "model": {"name": config.model.name, "params": {"n_mels": net.model.n_mels, **config.model.params}},
        "rate_scale_bpm": net.rate_scale_bpm,
        "count_scale": net.count_scale,
    }
    return write_checkpoint(path, bundle, half_precision(state) if half else state, metrics, config.to_dict())


def build_from_rr_checkpoint(bundle: dict[str, Any]) -> tuple[RateNet, ClipConfig]:
    """Rebuild the net (fp32, eval mode) and its clip config from a checkpoint dict."""
    if bundle.get("task") != "resp-rate":
        raise CheckpointError(f"checkpoint is for task {bundle.get('task')!r}, not 'resp-rate'")
    features = create_features(bundle["features"]["name"], **bundle["features"]["params"])
    model = create_model(bundle["model"]["name"], **bundle["model"]["params"])
    net = RateNet(features, model, float(bundle["rate_scale_bpm"]), float(bundle["count_scale"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in bundle["state_dict"].items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint weights do not fit its model: {err}") from None
    return net.eval(), ClipConfig(**bundle["audio"])
