"""The detector behind its interface, the training loop, checkpoints and the detect CLI.

Needs the optional engine (``pulmo[detect]``, ultralytics); skipped without it. The
test without the engine checks that the rest of pulmo imports and fails clearly.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pulmo.data.adapters.synthetic_xray import synthetic_body_scan, write_synthetic_body_scans
from pulmo.data.xray_image import save_xray

ENGINE_BLOCKED = "import sys; sys.modules['ultralytics'] = None\n"


def test_core_imports_and_clear_error_without_engine():
    code = ENGINE_BLOCKED + (
        "import importlib, pkgutil, pulmo\n"
        "for m in pkgutil.walk_packages(pulmo.__path__, 'pulmo.'):\n"
        "    importlib.import_module(m.name)\n"
        "from pulmo.errors import ConfigError\n"
        "from pulmo.models.detector import create_detector, engine_available\n"
        "assert not engine_available()\n"
        "try:\n    create_detector('yolov5n', 2)\nexcept ConfigError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'pulmo[detect]'" in out.stdout


def _tiny_config(root, **train):
    from pulmo.detect.config import DetectExperimentConfig

    return DetectExperimentConfig.from_dict({
        "name": "tiny", "data": {"dataset": "synthetic", "root": str(root), "color": False, "window_percentile": 0.5, "remap": "agnostic",
                 "max_train_images": 3},  # of 4: the limit's path runs too
        "tiling": {"tile": 96, "n_tiles": 2, "overlap": 32, "n_negative": 1},
        "model": {"name": "yolov5n"},
        "train": {"epochs": 2, "batch_size": 4, "augment": ["hflip", "blur", "brightness_contrast", "noise"], "eval_every": 1,
                  "lr_final": 0.1, **train},
        "inference": {"flip_tta": "validation"},
    })


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("ultralytics")
    from pulmo.detect.train import run_detect_experiment

    tmp = tmp_path_factory.mktemp("det")
    root = write_synthetic_body_scans(tmp / "syn", {"train": 4, "val": 2, "test": 2}, seed=0, height=200, width=162, n_objects=(2, 4))
    metrics = run_detect_experiment(_tiny_config(root), tmp / "run", progress=False)
    return tmp, root, metrics


def test_patience_counts_evaluations_and_keeps_the_best_evaluated_epoch(tiny_run, tmp_path):
    """Validation every 2nd epoch, patience 1: training stops at the first evaluation that is not
    better than the best so far, and the kept epoch is the best evaluated one (whatever the values)."""
    from pulmo.detect.train import run_detect_experiment

    _, root, _ = tiny_run
    cfg = _tiny_config(root, epochs=6, eval_every=2, monitor="val_map50", patience=1, lr=3e-3)
    metrics = run_detect_experiment(cfg, tmp_path / "run", progress=False, eval_test=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evaluated = [(row["epoch"], -row["val_map50"]) for row in log if "val_map50" in row]
    assert [e for e, _ in evaluated] == [e for e in (2, 4, 6) if e <= len(log)]
    best, stop = evaluated[0], 6
    for epoch, value in evaluated[1:]:
        if value < best[1]:
            best = (epoch, value)
        else:
            stop = epoch
            break
    assert (metrics["epochs_run"], len(log), metrics["best_epoch"]) == (stop, stop, best[0])


def test_image_limits_spread_over_the_list():
    """``data.max_*_images`` take images spread evenly over the list (files are often grouped by class)."""
    from pulmo.detect.train import _limit

    assert _limit(list(range(10)), 4) == [0, 3, 6, 9]
    assert _limit(list(range(3)), 0) == [0, 1, 2] and _limit(list(range(3)), 5) == [0, 1, 2]


def test_detector_loss_backward_and_predict():
    pytest.importorskip("ultralytics")
    from pulmo.models.detector import DETECTORS, create_detector

    assert {"yolov5n", "yolov5s"} <= set(DETECTORS.names())
    torch.manual_seed(0)
    det = create_detector("yolov5n", num_classes=3)
    x = torch.rand(2, 3, 64, 64)
    loss, parts = det.loss(x, [(np.array([[5.0, 5.0, 40.0, 30.0]]), np.array([2])), (np.zeros((0, 4)), np.zeros(0))])
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"box", "cls", "dfl"}
    grads = [p.grad for p in det.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)
    out = det.predict(x, conf=0.0, iou=0.5)
    assert len(out) == 2 and out[0][0].shape[1] == 4 and out[0][2].dtype == np.int64


def test_training_run_writes_checkpoint_and_metrics(tiny_run):
    tmp, _, metrics = tiny_run
    assert (tmp / "run" / "model.pt").is_file()
    assert metrics["classes"] == ["anomaly"] and metrics["best_epoch"] in (1, 2)
    for split in ("val", "test"):
        assert 0.0 <= metrics[split]["f1"] <= 1.0 and metrics[split]["n"] == 2
    assert metrics["test_throughput"]["tiles"] > 0
    log = [json.loads(line) for line in (tmp / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all("val_loss" in r for r in log)
    assert [r["lr"] for r in log] == pytest.approx([1e-3, 1e-4])  # cosine to lr_final x lr
    # test-time flipping chosen on validation F1 (ties: off); the checkpoint keeps the outcome
    from pulmo.detect.checkpoint import read_detect_checkpoint

    f1 = metrics["flip_tta_val_f1"]
    chosen = read_detect_checkpoint(tmp / "run" / "model.pt")["config"]["inference"]["flip_tta"]
    assert chosen == ("on" if f1["on"] > f1["off"] else "off")


def test_pretrained_file_reports_keys(tiny_run, tmp_path):
    from pulmo.models.detector import create_detector, load_pretrained

    tmp, _, _ = tiny_run
    det = create_detector("yolov5n", num_classes=3)  # another class count: the class head is skipped
    rep = load_pretrained(det, tmp / "run" / "model.pt")
    assert rep["loaded"] and rep["skipped"] and all("cv3" in k for k in rep["skipped"])


def test_cli_evaluate_and_analyze(tiny_run, tmp_path, capsys):
    from pulmo.cli import main

    tmp, root, metrics = tiny_run
    ckpt = str(tmp / "run" / "model.pt")
    assert main(["evaluate", "--task", "detect", "--data", str(root), "--split", "test", "--checkpoint", ckpt, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("precision", "recall", "f1", "n", "model", "checkpoint", "checkpoint_sha256", "tiles_per_s"):
        assert key in report
    assert report["n"] == 2 and report["f1"] == pytest.approx(metrics["test"]["f1"])
    scan = tmp_path / "scan.png"
    img, _, _ = synthetic_body_scan(np.random.default_rng(5), height=200, width=162, n_objects=(2, 3))
    save_xray(img, scan)
    out = tmp_path / "out"
    assert main(["analyze", str(scan), "--task", "detect", "--checkpoint", ckpt, "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)[0]
    assert res["task"] == "detect" and len(res["detections"]) == len(res["table"]["rows"])
    png = out / "scan_boxes.png"
    assert png.is_file() and (out / "scan.html").is_file()
    from PIL import Image

    assert Image.open(png).size == (162, 200)
    # a bad file is skipped with a one-line message; all bad -> status 2
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["analyze", str(tmp_path / "bad.png"), "--task", "detect", "--checkpoint", ckpt, "--out", str(out)]) == 2
    assert "bad.png" in capsys.readouterr().err


def test_cli_errors_are_one_line(tiny_run, tmp_path, capsys):
    from pulmo.cli import main

    tmp, _, _ = tiny_run
    ckpt = str(tmp / "run" / "model.pt")
    assert main(["evaluate", "--task", "detect", "--data", str(tmp_path), "--checkpoint", ckpt, "--json"]) == 2
    assert "no VOC layout" in capsys.readouterr().err
    lung = tmp_path / "x.pt"
    torch.save({"format": "pulmo-checkpoint/1", "task": "lung-sounds"}, lung)
    assert main(["evaluate", "--task", "detect", "--data", str(tmp_path), "--checkpoint", str(lung)]) == 2
    assert "not a detect checkpoint" in capsys.readouterr().err


def test_bundled_detect_model_is_listed_and_loads(capsys):
    pytest.importorskip("ultralytics")
    from pulmo.cli import main
    from pulmo.inference.bundled import default_checkpoint
    from pulmo.inference.detect import DetectPipeline

    path = default_checkpoint("detect")
    assert path.stat().st_size < 6e6
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert path.name in out and "task detect" in out
    line = out.split(path.name, 1)[1].splitlines()[2]
    assert line.strip().startswith("stored test figures:") and " f1 " in line
    pipe = DetectPipeline.from_checkpoint()
    assert pipe.labels and set(pipe.labels) <= set(pipe.mapping.values())
    res, image, _ = pipe.detect_file(path.parent / "demo_body_scan_16bit.png")
    assert image.dtype == np.uint16 and res.width == 406 and res.height == 500
