"""Temperature scaling, expected calibration error and confidence-threshold abstention.

The temperature is fitted on validation logits (never on the scored set); the abstention
threshold is a quantile of the validation images' calibrated confidence (a target coverage).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import f1_score

UNCERTAIN = "uncertain"


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``T`` in [0.05, 20] minimising the NLL of ``softmax(logits / T)``;
    ``logits (N, K)``, ``labels (N,)`` int."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def calibrated_proba(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``(N, K)`` probabilities of ``logits / temperature``."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: confidence-binned |accuracy - confidence|, weighted by bin share (equal-width bins)."""
    proba, labels = np.asarray(proba), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    conf, correct = proba.max(1), proba.argmax(1) == labels
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def coverage_threshold(proba: np.ndarray, coverage: float = 0.8) -> float:
    """The confidence below which ``1 - coverage`` of these (validation) images fall."""
    return float(np.quantile(np.asarray(proba).max(1), 1 - coverage)) if len(proba) else 0.0


def selective_scores(proba: np.ndarray, labels: np.ndarray, threshold: float, n_classes: int) -> dict[str, float]:
    """``abstention_rate`` (share with confidence below ``threshold``) and ``selective_macro_f1``
    (macro-F1 over the classes present, on the images kept; NaN if none is kept)."""
    proba, labels = np.asarray(proba), np.asarray(labels)
    keep = proba.max(1) >= threshold
    out = {"abstention_rate": float(1 - keep.mean()) if len(keep) else float("nan"), "selective_macro_f1": float("nan")}
    if keep.any():
        present = sorted(set(labels[keep].tolist()))
        out["selective_macro_f1"] = float(f1_score(labels[keep], proba[keep].argmax(1), labels=present,
                                                   average="macro", zero_division=0))
    return out


__all__ = ["UNCERTAIN", "calibrated_proba", "coverage_threshold", "expected_calibration_error", "fit_temperature",
           "selective_scores"]
