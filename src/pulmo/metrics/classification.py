"""Multi-class classification metrics: confusion matrix, per-class P/R/F1, accuracy, macro-F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision / recall / F1 / support, as fractions.

    A class never predicted has precision 0; a class absent from ``y_true`` has recall 0 and
    is left out of the macro average (so a folder missing a class is not penalised for it).
    """
    k = len(labels)
    cm = confusion(y_true, y_pred, k)
    tp = np.diag(cm).astype(float)
    pred_n, true_n = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, pred_n, out=np.zeros(k), where=pred_n > 0)
    recall = np.divide(tp, true_n, out=np.zeros(k), where=true_n > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = true_n > 0
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "precision": {lab: float(v) for lab, v in zip(labels, precision)},
        "recall": {lab: float(v) for lab, v in zip(labels, recall)},
        "f1": {lab: float(v) for lab, v in zip(labels, f1)},
        "support": {lab: int(v) for lab, v in zip(labels, true_n)},
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
    }
