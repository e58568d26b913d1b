"""Boundary detection scores: how well predicted cycle boundaries hit annotated ones."""

from __future__ import annotations

from collections.abc import Sequence


def matched_boundaries(predicted_s: Sequence[float], reference_s: Sequence[float], tolerance_s: float) -> int:
    """Largest number of one-to-one pairs (predicted, reference) closer than ``tolerance_s`` (inclusive).

    On a line, pairing in sorted order (two pointers) is optimal for this matching.
    """
    if tolerance_s < 0:
        raise ValueError("tolerance must be >= 0")
    p, r = sorted(predicted_s), sorted(reference_s)
    i = j = hits = 0
    while i < len(p) and j < len(r):
        if abs(p[i] - r[j]) <= tolerance_s:
            hits, i, j = hits + 1, i + 1, j + 1
        elif p[i] < r[j]:
            i += 1
        else:
            j += 1
    return hits


def boundary_f1(predicted_s: Sequence[float], reference_s: Sequence[float], tolerance_s: float) -> dict[str, float]:
    """Precision, recall and F1 of boundaries (seconds) at ``tolerance_s``, with the counts.

    Empty on both sides is a perfect 1.0; one side empty gives 0 for what has no matches.
    """
    hits = matched_boundaries(predicted_s, reference_s, tolerance_s)
    n_pred, n_ref = len(predicted_s), len(reference_s)
    precision = hits / n_pred if n_pred else float(n_ref == 0)
    recall = hits / n_ref if n_ref else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": hits, "n_predicted": n_pred, "n_reference": n_ref}
