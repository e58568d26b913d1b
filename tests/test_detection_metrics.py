"""Detection metrics against hand-computed matches."""

from __future__ import annotations

import numpy as np
import pytest

from pulmo.metrics.detection import ImageDetections, average_precision, choose_thresholds, detection_report, match_image


def det(pred, scores, plab, gt, glab):
    return ImageDetections(np.array(pred, dtype=float).reshape(-1, 4), np.array(scores, dtype=float),
                           np.array(plab), np.array(gt, dtype=float).reshape(-1, 4), np.array(glab))


def test_match_greedy_by_score_one_gt_each():
    d = det([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]], [0.6, 0.9, 0.8], ["a", "a", "a"],
            [[0, 0, 10, 10]], ["a"])
    # highest score (index 1, IoU 0.9) takes the box; index 0 is a duplicate; index 2 misses
    assert match_image(d).tolist() == [False, True, False]


def test_wrong_class_or_low_iou_is_false_positive():
    d = det([[0, 0, 10, 10], [0, 0, 10, 4]], [0.9, 0.9], ["b", "a"], [[0, 0, 10, 10]], ["a"])
    assert match_image(d).tolist() == [False, False]  # class b; IoU 0.4


def test_report_hand_computed():
    images = [
        # image 1: 2 gt (a, b); preds: a match, b miss-located, extra a -> TP 1, FP 2, FN 1
        det([[0, 0, 10, 10], [100, 100, 110, 110], [30, 30, 40, 40]], [0.9, 0.8, 0.7], ["a", "b", "a"],
            [[0, 0, 10, 10], [50, 50, 60, 60]], ["a", "b"]),
        # image 2: 1 gt a, matched -> TP 1
        det([[5, 5, 15, 15]], [0.95], ["a"], [[5, 5, 15, 15]], ["a"]),
        # image 3: no gt, no preds -> true negative image
        det([], [], [], [], []),
        # image 4: no gt, one pred below the threshold -> true negative image; one above -> FP
        det([[0, 0, 5, 5], [10, 10, 20, 20]], [0.1, 0.5], ["a", "b"], [], []),
    ]
    rep = detection_report(images, thresholds=0.25)
    # TP 2; FP: img1 two + img4 one = 3; FN 1
    assert (rep["tp"], rep["fp"], rep["fn"]) == (2, 3, 1)
    assert rep["precision"] == pytest.approx(2 / 5)
    assert rep["recall"] == pytest.approx(2 / 3)
    assert rep["f1"] == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))
    assert rep["per_class"]["a"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "tp": 2, "fp": 1, "fn": 0}
    assert rep["per_class"]["b"]["tp"] == 0 and rep["per_class"]["b"]["fp"] == 2 and rep["per_class"]["b"]["fn"] == 1
    # images with anomalies: 1, 2 both flagged -> Se 1; normal images: 3 (clear), 4 (flagged) -> Sp 0.5
    assert rep["image_sensitivity"] == 1.0 and rep["image_specificity"] == 0.5
    assert rep["n"] == 4


def test_per_class_thresholds_and_empty_inputs():
    images = [det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.3, 0.6], ["a", "b"], [[0, 0, 10, 10]], ["a"])]
    rep = detection_report(images, thresholds={"a": 0.2, "b": 0.7})
    assert (rep["tp"], rep["fp"], rep["fn"]) == (1, 0, 0) and rep["f1"] == 1.0
    empty = detection_report([det([], [], [], [], [])])
    assert empty["f1"] == 0.0 and empty["image_sensitivity"] is None and empty["image_specificity"] == 1.0
    assert detection_report([])["n"] == 0


def test_average_precision_hand_computed():
    # scores ranked: TP, FP, TP with 2 gt -> precision at recalls 0.5: 1, 1.0: 2/3 -> AP = 0.5*1 + 0.5*2/3
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(np.array([]), np.array([], dtype=bool), 0) == 0.0


def test_choose_thresholds_maximises_class_f1():
    # class a: true object at 0.6, false alarm at 0.3 -> best threshold in (0.3, 0.6]
    images = [det([[0, 0, 10, 10], [50, 50, 60, 60]], [0.6, 0.3], ["a", "a"], [[0, 0, 10, 10]], ["a"])]
    t = choose_thresholds(images, ["a"])
    assert 0.3 < t["a"] <= 0.6
