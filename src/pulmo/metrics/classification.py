"""Multi-class classification metrics: confusion matrix, per-class P/R/F1, accuracy, macro-F1
(scikit-learn's, in the report shape pulmo's commands print)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts, rows = true class, columns = predicted class."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).astype(np.int64)


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision / recall / F1 / support, as fractions.

    A class never predicted has precision 0; a class absent from ``y_true`` has recall 0 and
    is left out of the macro average (so a folder missing a class is not penalised for it).
    """
    from sklearn.metrics import precision_recall_fscore_support

    k = len(labels)
    cm = confusion(y_true, y_pred, k)
    tp = np.diag(cm).astype(float)
    precision, recall, f1, true_n = precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)),
                                                                    zero_division=0) if len(y_true) else (
        np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k, dtype=np.int64))
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
