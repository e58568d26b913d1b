"""Batched prediction over cycle waveforms and the full ICBHI report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pulmo.data.audio_io import fix_length
from pulmo.data.records import AudioRecord
from pulmo.metrics.icbhi import confusion_matrix, icbhi_breakdown, icbhi_scores


@torch.no_grad()
def predict_probabilities(
    net: torch.nn.Module, waveforms: Sequence[np.ndarray], n_samples: int, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """``(N, K)`` class probabilities; each waveform is cut from its start / zero-padded to ``n_samples``."""
    net.eval()
    out = []
    for i in tqdm(range(0, len(waveforms), batch_size), desc="predicting", unit="batch", disable=not progress):
        batch = np.stack([fix_length(w, n_samples, start=0) for w in waveforms[i : i + batch_size]])
        out.append(torch.softmax(net(torch.from_numpy(batch)).float(), dim=1).numpy())
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
