"""Validation that catches source shortcuts: patient-grouped splits, leave-one-source-out
scores per source, and a source probe (how well features predict where an image came from)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def grouped_split(strata: Sequence[str], groups: Sequence[str], val_fraction: float = 0.15,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: about ``val_fraction`` of the images in validation, no group
    (patient) on both sides, ``strata`` (e.g. class + source) kept in proportion where possible."""
    n_splits = max(2, int(round(1 / val_fraction)))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    tr, va = next(cv.split(np.zeros(len(strata)), list(strata), list(groups)))
    return tr, va


def source_scores(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, object]:
    """Scores of one held-out source: ``macro_f1`` over the classes present in ``labels``
    (a one-class source gives that class's F1), ``accuracy``, per-class ``f1`` (None for a
    class absent from ``labels``) and ``n``."""
    present = sorted(set(labels.tolist()))
    per = f1_score(labels, pred, labels=list(range(n_classes)), average=None, zero_division=0)
    return {"n": int(len(labels)), "accuracy": float((labels == pred).mean()),
            "macro_f1": float(f1_score(labels, pred, labels=present, average="macro", zero_division=0)),
            "f1": [float(per[k]) if k in present else None for k in range(n_classes)]}


def source_probe(features: np.ndarray, sources: Sequence[str], groups: Sequence[str], folds: int = 5,
                 seed: int = 0) -> float:
    """Balanced accuracy of a logistic regression predicting the source from ``features (N, D)``,
    out of fold (patient-grouped, stratified by source). Chance is ``1 / number of sources``."""
    src = np.asarray(sources)
    pred = np.empty(len(src), dtype=object)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for tr, te in cv.split(features, src, list(groups)):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        clf.fit(features[tr], src[tr])
        pred[te] = clf.predict(features[te])
    return float(balanced_accuracy_score(src, pred.astype(str)))


__all__ = ["grouped_split", "source_probe", "source_scores"]
