"""The detection study's helpers: the patience and YOLOv5s rows, class-agnostic cross-domain
scoring, per-seed columns of the ablation table and the bundling guard (hand-made inputs only)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pulmo.detect.config import load_detect_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
CONFIGS = ROOT / "configs" / "experiments" / "xray-detect"


def test_patience_row_config():
    """(Every YOLOv5s row differing from its YOLOv5n row in the model only: test_detect_config.)"""
    cfg = load_detect_config(CONFIGS / "baggage_fig11_ideal_long_stage5_patience.yaml")
    assert cfg.train.monitor == "val_map50" and cfg.train.patience > 0 and cfg.train.eval_every == 1
    assert cfg.model.pretrained.endswith("detect_yolov5n_baggage.pt")


def test_yolov5s_config_builds_the_larger_detector():
    pytest.importorskip("ultralytics")
    from pulmo.models.detector import create_detector

    cfg = load_detect_config(CONFIGS / "baggage_fig5_tiles2_yolov5s.yaml")
    n_params = {name: sum(p.numel() for p in create_detector(name, num_classes=3).parameters())
                for name in (cfg.model.name, "yolov5n")}
    assert 7e6 < n_params["yolov5s"] < 12e6 and n_params["yolov5n"] < 4e6


def test_class_agnostic_keeps_each_class_at_its_threshold_and_counts_an_object_once():
    from xray_detect import class_agnostic

    from pulmo.metrics.detection import ImageDetections, detection_report

    gun = [10.0, 10.0, 50.0, 50.0]
    det = ImageDetections(np.array([gun, [11.0, 11.0, 50.0, 50.0], [100.0, 100.0, 120.0, 120.0]]), np.array([0.9, 0.6, 0.3]),
                          np.array(["knife", "wrench", "knife"], dtype=object), np.array([gun]), np.array(["Gun"], dtype=object))
    out = class_agnostic([det], {"knife": 0.5, "wrench": 0.5})
    assert list(out[0].pred_scores) == [0.9] and list(out[0].pred_labels) == ["object"]  # wrench suppressed, 0.3 < 0.5
    assert list(out[0].gt_labels) == ["object"]
    rep = detection_report(out, 0.0, classes=["object"])
    assert (rep["tp"], rep["fp"], rep["fn"]) == (1, 0, 0)
    everything = class_agnostic([det], 0.0)
    assert sorted(everything[0].pred_scores) == [0.3, 0.9]


def test_seed_columns_merge_earlier_seeds_with_runs_here():
    from xray_detect import devices_by_seed, seed_columns

    earlier = {"test_f1_by_seed": "0:0.4912;1:0.5053", "train_seconds": 1269.3}
    runs = {2: {"test": {"f1": 0.50}, "train_seconds": 400.0, "device": "CPU Intel(R) Xeon(R) Processor, 1 thread"}}
    cols = seed_columns({"dataset": "baggage"}, earlier, runs, here="CPU X, 1 thread")
    assert cols["test_f1_by_seed"] == "0:0.4912;1:0.5053;2:0.5000" and cols["n_seeds"] == 3
    assert cols["train_seconds_by_seed"] == "0:1269.3;2:400.0"  # seed 1's time was never recorded
    assert cols["test_f1_mean"] == pytest.approx(0.49883, abs=1e-5)
    assert cols["test_f1_std"] == pytest.approx(np.std([0.4912, 0.5053, 0.5], ddof=1))
    assert cols["gap_to_target_f1"] == pytest.approx(0.85 - cols["test_f1_mean"])
    assert devices_by_seed(cols["device_by_seed"]) == "CPU AMD EPYC, 1 thread (seeds 0, 1); CPU Intel Xeon, 1 thread (seed 2)"
    one = seed_columns({"dataset": "synthetic", "test_f1": 0.3}, {}, {}, here="CPU X, 1 thread")
    assert one["n_seeds"] == 1 and one["test_f1_std"] == "" and one["gap_to_target_f1"] == ""
    assert seed_columns({"dataset": "baggage"}, {}, {}, here="CPU X, 1 thread") == {}


def test_bundle_guard_needs_better_validation_f1_and_map50():
    from xray_detect import not_better_on_validation

    present = {"f1": 0.7435, "map50": 0.6924}
    assert not_better_on_validation({"f1": 0.75, "map50": 0.70}, present) == ""
    assert not_better_on_validation({"f1": 0.75, "map50": 0.69}, present) == "map50 0.6900 <= 0.6924"
    assert "f1 0.7435 <= 0.7435" in not_better_on_validation({"f1": 0.7435, "map50": 0.80}, present)
