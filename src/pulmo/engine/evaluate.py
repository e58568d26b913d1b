"""Batched prediction over cycle waveforms and the full ICBHI report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pulmo.data.audio_io import fix_length, window_starts_samples
from pulmo.data.records import AudioRecord
from pulmo.features.base import FeatureExtractor
from pulmo.metrics.icbhi import confusion_matrix, icbhi_breakdown, icbhi_scores


def fixed_length_batches(
    waveforms: Sequence[np.ndarray], n_samples: int, batch_size: int, pad: str, desc: str, progress: bool
) -> Iterator[torch.Tensor]:
    """``(b, n_samples)`` batches in order; each waveform cut from its start or padded (``pad``)."""
    for i in tqdm(range(0, len(waveforms), batch_size), desc=desc, unit="batch", disable=not progress):
        yield torch.from_numpy(np.stack([fix_length(w, n_samples, start=0, pad=pad) for w in waveforms[i : i + batch_size]]))


@torch.no_grad()
def predict_probabilities(
    net: torch.nn.Module, waveforms: Sequence[np.ndarray], n_samples: int, batch_size: int = 64, progress: bool = False,
    pad: str = "zero",
) -> np.ndarray:
    """``(N, K)`` class probabilities of fixed-length cycles (see :func:`fixed_length_batches`)."""
    net.eval()
    out = [
        torch.softmax(net(batch).float(), dim=1).numpy()
        for batch in fixed_length_batches(waveforms, n_samples, batch_size, pad, "predicting", progress)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def extract_features(
    features: FeatureExtractor, waveforms: Sequence[np.ndarray], n_samples: int, pad: str, batch_size: int = 64,
    progress: bool = False, cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """``(N, C, F, frames)`` feature maps of fixed-length cycles, computed once (for training
    with ``train.precompute_features``).

    With ``cache_dir`` the maps are kept in a file named by a hash of the extractor's name
    and config, ``n_samples``, ``pad`` and the waveforms' bytes, so runs that share all of
    these (seeds, model ablations) compute them once.
    """
    key = hashlib.sha256(json.dumps([features.name, features.config_dict(), n_samples, pad]).encode())
    for w in waveforms:
        key.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    cached = Path(cache_dir) / f"{features.name}-{key.hexdigest()[:16]}.pt" if cache_dir else None
    if cached is not None and cached.is_file():
        return torch.load(cached, weights_only=True)
    maps = [features(b) for b in fixed_length_batches(waveforms, n_samples, batch_size, pad, "features", progress)]
    out = torch.cat(maps) if maps else torch.zeros(0)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, cached.with_suffix(".tmp"))
        cached.with_suffix(".tmp").replace(cached)  # atomic: parallel runs never read a partial file
    return out


@torch.no_grad()
def predict_from_features(model: torch.nn.Module, features: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """``(N, K)`` class probabilities from precomputed ``(N, C, F, frames)`` feature maps."""
    model.eval()
    out = [torch.softmax(model(features[i : i + batch_size]).float(), dim=1).numpy() for i in range(0, len(features), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def icbhi_report(records: Sequence[AudioRecord], y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Score, confusion matrix, per-class recall, and per-device / per-location breakdowns."""
    normal = labels.index("normal")
    cm = confusion_matrix(y_true, y_pred, len(labels))
    recall = {lab: float(cm[k, k] / cm[k].sum()) if cm[k].sum() else float("nan") for k, lab in enumerate(labels)}
    return {
        **icbhi_scores(y_true, y_pred, normal),
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
        "recall": recall,
        "per_device": icbhi_breakdown(y_true, y_pred, [r.device for r in records], normal),
        "per_location": icbhi_breakdown(y_true, y_pred, [r.location for r in records], normal),
    }


def presence(label: str) -> tuple[int, int]:
    """A four-class label's (crackle, wheeze) presence flags."""
    return int(label in ("crackle", "both")), int(label in ("wheeze", "both"))


def recording_windows(wave: np.ndarray, n_samples: int) -> list[np.ndarray]:
    """Windows of ``n_samples`` at half-window hops covering ``wave`` (the last one ends at its end)."""
    if len(wave) <= n_samples:
        return [wave]
    return [wave[s : s + n_samples] for s in window_starts_samples(len(wave), n_samples, n_samples // 2)]


def kauh_report(
    net: torch.nn.Module, waveforms: Sequence[np.ndarray], records: Sequence[AudioRecord], labels: Sequence[str],
    n_samples: int,
) -> dict[str, Any]:
    """Recording-level crackle, wheeze and adventitious-sound detection on whole recordings.

    Each recording is cut into half-overlapping windows; a recording's presence probability
    of crackles (wheezes) is its highest window's P(crackle) + P(both) (P(wheeze) + P(both)),
    the multiple-instance rule; "adventitious" takes the larger of the two. Reports ROC AUC
    and, at probability 0.5, sensitivity and specificity, for each of the three.
    """
    from sklearn.metrics import roc_auc_score

    from pulmo.losses.mil import bag_presence, presence_probabilities

    index = [labels.index(c) for c in ("crackle", "wheeze", "both")]
    scores = []
    for wave in waveforms:
        probs = predict_probabilities(net, recording_windows(wave, n_samples), n_samples, pad="repeat")
        scores.append(bag_presence(presence_probabilities(torch.from_numpy(probs)[None], *index))[0].numpy())
    score = np.asarray(scores).reshape(len(records), 2)
    truth = np.asarray([presence(r.label) for r in records]).reshape(len(records), 2)
    report: dict[str, Any] = {"n": len(records)}
    for name, s, t in (("crackle", score[:, 0], truth[:, 0]), ("wheeze", score[:, 1], truth[:, 1]),
                       ("adventitious", score.max(1), truth.max(1))):
        pos, neg = t == 1, t == 0
        report[name] = {
            "auc": float(roc_auc_score(t, s)) if pos.any() and neg.any() else float("nan"),
            "sensitivity": float((s[pos] >= 0.5).mean()) if pos.any() else float("nan"),
            "specificity": float((s[neg] < 0.5).mean()) if neg.any() else float("nan"),
            "positives": int(pos.sum()),
        }
    return report
