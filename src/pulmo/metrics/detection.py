"""Detection metrics on whole images: precision, recall and F1 at an IoU threshold (per
class and overall), image-level "any anomaly" sensitivity and specificity, and mAP50.

Inputs per image are :class:`ImageDetections` (predictions, already merged across tiles)
and the image's ground truth. Matching is greedy by descending score, one ground-truth box
per prediction, same class only (the usual VOC/COCO rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pulmo.data.tiling import box_iou


@dataclass
class ImageDetections:
    """Predictions and ground truth of one image. Boxes ``(N, 4)`` xyxy pixels."""

    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    pred_labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray


def match_image(det: ImageDetections, iou_threshold: float = 0.5) -> np.ndarray:
    """``(N_pred,)`` bool: True where a prediction matches a not-yet-matched ground-truth
    box of its class with IoU >= ``iou_threshold`` (predictions taken by score)."""
    pb = np.asarray(det.pred_boxes, dtype=np.float64).reshape(-1, 4)
    gb = np.asarray(det.gt_boxes, dtype=np.float64).reshape(-1, 4)
    tp = np.zeros(len(pb), dtype=bool)
    if len(pb) == 0 or len(gb) == 0:
        return tp
    iou = box_iou(pb, gb)
    plab, glab = np.asarray(det.pred_labels), np.asarray(det.gt_labels)
    used = np.zeros(len(gb), dtype=bool)
    for i in np.argsort(-np.asarray(det.pred_scores, dtype=np.float64), kind="stable"):
        cand = np.where((glab == plab[i]) & ~used & (iou[i] >= iou_threshold))[0]
        if len(cand):
            j = cand[np.argmax(iou[i, cand])]
            used[j] = True
            tp[i] = True
    return tp


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def _threshold(det: ImageDetections, thresholds: Mapping[str, float] | float) -> ImageDetections:
    scores = np.asarray(det.pred_scores, dtype=np.float64)
    labels = np.asarray(det.pred_labels)
    if isinstance(thresholds, Mapping):
        t = np.array([thresholds.get(str(lab), 0.0) for lab in labels], dtype=np.float64)
    else:
        t = np.full(len(scores), float(thresholds))
    keep = scores >= t
    return ImageDetections(np.asarray(det.pred_boxes).reshape(-1, 4)[keep], scores[keep], labels[keep],
                           det.gt_boxes, det.gt_labels)


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """VOC all-point interpolated average precision of one class."""
    if n_gt == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def detection_report(
    images: Sequence[ImageDetections],
    thresholds: Mapping[str, float] | float = 0.25,
    iou_threshold: float = 0.5,
    classes: Sequence[str] | None = None,
) -> dict[str, object]:
    """Whole-image metrics as fractions.

    ``precision``/``recall``/``f1`` pool every box of every class (micro average);
    ``per_class`` gives the same per class; ``image_sensitivity``/``image_specificity``
    answer "does this image hold any anomaly" (None when the split has no image of that
    kind); ``map50`` uses all predictions, ignoring ``thresholds``. ``n`` counts images.
    """
    all_classes = set(classes or [])
    for d in images:
        all_classes |= {str(x) for x in d.gt_labels} | {str(x) for x in d.pred_labels}
    counts = {c: [0, 0, 0] for c in sorted(all_classes)}
    img = {"tp": 0, "fn": 0, "tn": 0, "fp": 0}
    ap_scores: dict[str, list[float]] = {c: [] for c in counts}
    ap_tp: dict[str, list[bool]] = {c: [] for c in counts}
    for raw in images:
        full_tp = match_image(raw, iou_threshold)
        for s, lab, t in zip(np.asarray(raw.pred_scores), np.asarray(raw.pred_labels), full_tp):
            ap_scores[str(lab)].append(float(s))
            ap_tp[str(lab)].append(bool(t))
        d = _threshold(raw, thresholds)
        tp = match_image(d, iou_threshold)
        for lab, t in zip(np.asarray(d.pred_labels), tp):
            counts[str(lab)][0 if t else 1] += 1
        gl = [str(x) for x in np.asarray(d.gt_labels)]
        matched_per_class: dict[str, int] = {}
        for lab, t in zip(np.asarray(d.pred_labels), tp):
            if t:
                matched_per_class[str(lab)] = matched_per_class.get(str(lab), 0) + 1
        for c in set(gl):
            counts[c][2] += gl.count(c) - matched_per_class.get(c, 0)
        has_gt, has_pred = len(gl) > 0, len(d.pred_labels) > 0
        img["tp" if has_gt and has_pred else "fn" if has_gt else "fp" if has_pred else "tn"] += 1
    per_class = {c: _prf(*v) for c, v in counts.items()}
    total = _prf(sum(v[0] for v in counts.values()), sum(v[1] for v in counts.values()), sum(v[2] for v in counts.values()))
    n_gt = {c: counts[c][0] + counts[c][2] for c in counts}
    aps = {c: average_precision(np.asarray(ap_scores[c]), np.asarray(ap_tp[c], dtype=bool), n_gt[c])
           for c in counts if n_gt[c] > 0}
    pos, neg = img["tp"] + img["fn"], img["tn"] + img["fp"]
    return {
        **total,
        "per_class": per_class,
        "image_sensitivity": img["tp"] / pos if pos else None,
        "image_specificity": img["tn"] / neg if neg else None,
        "image_counts": img,
        "map50": float(np.mean(list(aps.values()))) if aps else 0.0,
        "ap50_per_class": aps,
        "iou_threshold": iou_threshold,
        "n": len(images),
    }


def choose_thresholds(images: Sequence[ImageDetections], classes: Sequence[str],
                      grid: Sequence[float] = (0.01, 0.02, 0.03, 0.05, 0.075, *np.round(np.arange(0.1, 0.951, 0.05), 2).tolist()),
                      iou_threshold: float = 0.5) -> dict[str, float]:
    """Per-class confidence thresholds that maximise each class's F1 (use validation images,
    never test). Matching is per class, so the classes can be tuned independently."""
    best = {}
    for c in classes:
        scores = []
        for t in grid:
            rep = detection_report(images, {k: (t if k == c else 1.1) for k in classes}, iou_threshold, classes)
            scores.append(rep["per_class"][c]["f1"])  # type: ignore[index]
        best[c] = float(grid[int(np.argmax(scores))])
    return best
