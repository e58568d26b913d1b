"""The ICBHI 2017 challenge score (Rocha et al. 2019; eqs. 8-10 of Yang et al.).

Sensitivity is the fraction of adventitious cycles (every class but ``normal``) given
exactly their class; specificity the fraction of normal cycles called normal; the score
is their mean. All values are fractions in [0, 1].
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``(K, K)`` counts, rows = true class, columns = predicted class (scikit-learn's)."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    return sk_confusion(y_true, y_pred, labels=list(range(num_classes))).astype(np.int64)


def icbhi_scores(y_true: Sequence[int], y_pred: Sequence[int], normal_index: int = 0) -> dict[str, float]:
    """``sensitivity``, ``specificity``, ``score`` and ``n``.

    A part with no examples (no normal, or no adventitious cycles) gives NaN for its rate.
    """
    t = np.asarray(y_true, int)
    p = np.asarray(y_pred, int)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape} vs {p.shape}")
    normal = t == normal_index
    abnormal = ~normal
    sp = float((p[normal] == normal_index).mean()) if normal.any() else float("nan")
    se = float((p[abnormal] == t[abnormal]).mean()) if abnormal.any() else float("nan")
    return {"sensitivity": se, "specificity": sp, "score": (se + sp) / 2, "n": int(len(t))}


def icbhi_breakdown(
    y_true: Sequence[int], y_pred: Sequence[int], groups: Sequence[str], normal_index: int = 0
) -> dict[str, dict[str, float]]:
    """:func:`icbhi_scores` per group (device, chest location, ...)."""
    idx: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        idx[g].append(i)
    t = np.asarray(y_true, int)
    p = np.asarray(y_pred, int)
    return {g: icbhi_scores(t[ix], p[ix], normal_index) for g, ix in sorted(idx.items())}
