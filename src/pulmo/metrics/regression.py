"""Regression metrics for rates: CCC, Pearson, MSE, MAE, Bland-Altman (NumPy, float64)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _pair(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"need two non-empty arrays of one length, got {p.size} and {t.size}")
    return p, t


def ccc(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """Lin's concordance correlation coefficient,
    ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)`` with population (1/N) moments.
    Two constant, equal arrays give 1; constant unequal arrays give 0."""
    p, t = _pair(pred, true)
    cov = np.mean((p - p.mean()) * (t - t.mean()))
    denom = p.var() + t.var() + (p.mean() - t.mean()) ** 2
    if denom == 0:
        return 1.0
    return float(2 * cov / denom)


def pearson(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """Pearson's r; 0 when either array is constant (undefined correlation)."""
    p, t = _pair(pred, true)
    if p.std() == 0 or t.std() == 0:
        return 0.0
    return float(np.corrcoef(p, t)[0, 1])


def regression_report(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``mae``, ``mse``, ``ccc``, ``pearson``, Bland-Altman ``bias`` and ``loa`` (1.96 SD of
    the differences), and ``n``, all in the inputs' unit (here breaths per minute)."""
    p, t = _pair(pred, true)
    d = p - t
    return {
        "mae": float(np.abs(d).mean()),
        "mse": float(np.square(d).mean()),
        "ccc": ccc(p, t),
        "pearson": pearson(p, t),
        "bias": float(d.mean()),
        "loa": float(1.96 * d.std()),
        "n": int(p.size),
    }


def mse_by_range(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray,
                 edges: tuple[float, float] = (15.0, 25.0)) -> dict[str, float | None]:
    """The paper's Table III: MSE for true rates below ``edges[0]``, between, and above
    ``edges[1]`` (``None`` where a range holds no item)."""
    p, t = _pair(pred, true)
    lo, hi = edges
    masks = {f"below_{lo:g}": t < lo, f"{lo:g}_to_{hi:g}": (t >= lo) & (t <= hi), f"above_{hi:g}": t > hi}
    return {k: (float(np.square(p[m] - t[m]).mean()) if m.any() else None) for k, m in masks.items()}


def f1_scores(pred: Sequence[int] | np.ndarray, true: Sequence[int] | np.ndarray, num_classes: int) -> dict[str, float]:
    """Macro F1 over the classes present in ``true`` or ``pred``, and per-class F1."""
    p, t = np.asarray(pred).ravel(), np.asarray(true).ravel()
    per = {}
    for k in range(num_classes):
        tp = int(((p == k) & (t == k)).sum())
        fp = int(((p == k) & (t != k)).sum())
        fn = int(((p != k) & (t == k)).sum())
        if tp + fp + fn:
            per[k] = 2 * tp / (2 * tp + fp + fn)
    macro = float(np.mean(list(per.values()))) if per else 0.0
    return {"macro_f1": macro, **{f"f1_{k}": v for k, v in per.items()}}
