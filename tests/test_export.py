"""ONNX export: the lung-sound, chest X-ray and detector models give PyTorch's outputs on fixed
inputs, and ``--runtime onnx`` gives the same reports through ``pulmo evaluate``."""

from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from pulmo.cli import main
from pulmo.errors import ConfigError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def evaluate_per_runtime(task: str, data, checkpoint, capsys) -> dict[str, dict]:
    """``pulmo evaluate --json`` of ``task`` on the test split of ``data``, per runtime (torch, onnx)."""
    reports = {}
    for runtime in ("torch", "onnx"):
        assert main(["evaluate", "--task", task, "--data", str(data), "--split", "test", "--checkpoint", str(checkpoint),
                     "--json", "--runtime", runtime]) == 0
        reports[runtime] = json.loads(capsys.readouterr().out)
    return reports


@pytest.fixture(scope="module")
def tiny(tiny_lung_checkpoint):
    return tiny_lung_checkpoint


def test_exported_model_gives_pytorchs_probabilities(tiny, tmp_path):
    from pulmo.export import OnnxClassifier, export
    from pulmo.inference.lung_sounds import LungSoundPipeline

    _, ckpt = tiny
    path = export("lung-sounds", str(ckpt), str(tmp_path / "m.onnx"))
    pipe = LungSoundPipeline.from_checkpoint(ckpt)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((5, pipe.audio.cycle_samples)).astype(np.float32))
    with torch.no_grad():
        expected = torch.softmax(pipe.net.eval()(x), 1).numpy()
    got = torch.softmax(OnnxClassifier(path)(x), 1).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


def test_evaluate_with_the_onnx_runtime_matches_torch(tiny, tmp_path, monkeypatch, capsys):
    root, ckpt = tiny
    monkeypatch.setenv("PULMO_CACHE", str(tmp_path / "cache"))
    reports = evaluate_per_runtime("lung-sounds", root, ckpt, capsys)
    assert reports["onnx"]["runtime"] == "onnx" and list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert reports["onnx"]["score"] == pytest.approx(reports["torch"]["score"], abs=0.005)


def test_tasks_and_runtimes_not_offered_say_so(capsys):
    from pulmo.export import export

    with pytest.raises(ConfigError, match="not in this version"):
        export("segmentation", None, "x.onnx")
    with pytest.raises(ConfigError, match="give --out a folder"):  # one file per network
        export("resp-rate", None, "x.onnx")
    for task, runtime in (("resp-rate", "onnx-int8"), ("cxr", "onnx-int8")):  # FP32 only; int8 that changes decisions
        assert main(["evaluate", "--task", task, "--runtime", runtime]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"not available for {task}" in err


def test_exported_chest_model_gives_the_same_logits_and_grad_cam(tmp_path):
    from pulmo.export import export
    from pulmo.inference.cxr import CxrPipeline
    from pulmo.inference.onnx import OnnxModule
    from tests.frontdoor_fixtures import chest_phantom

    pipe = CxrPipeline.from_checkpoint()
    grays = [chest_phantom(256, seed) for seed in range(3)]
    expected, heat = pipe.logits(grays), pipe.heatmap(grays[0], 1)
    pipe.model = OnnxModule(export("cxr", None, str(tmp_path / "cxr.onnx")), pipe.model)
    assert np.abs(pipe.logits(grays) - expected).max() < 1e-3
    assert np.abs(pipe.heatmap(grays[0], 1) - heat).max() < 1e-5  # onnxruntime has no gradients: PyTorch answers


def test_int8_export_calibrates_and_stays_close(tiny, tmp_path, monkeypatch):
    from pulmo.export import OnnxClassifier, export
    from pulmo.inference.lung_sounds import LungSoundPipeline

    _, ckpt = tiny
    monkeypatch.setenv("PULMO_DATA", str(tmp_path / "no-data"))  # no training data: synthetic calibration, said so
    with pytest.warns(UserWarning, match="calibrating on synthetic inputs"):
        path = export("lung-sounds", str(ckpt), str(tmp_path / "m8.onnx"), int8=True)
    pipe = LungSoundPipeline.from_checkpoint(ckpt)
    x = torch.from_numpy((0.1 * np.random.default_rng(1).standard_normal((4, pipe.audio.cycle_samples))).astype(np.float32))
    with torch.no_grad():
        expected = torch.softmax(pipe.net.eval()(x), 1).numpy()
    got = torch.softmax(OnnxClassifier(path)(x), 1).numpy()
    assert not (tmp_path / "m8.fp32.onnx").exists() and np.abs(got - expected).max() < 0.1
    import onnx

    graph = onnx.load(str(path)).graph
    fp32_1d = {i.name for i in graph.initializer if len(i.dims) == 3 and i.data_type == onnx.TensorProto.FLOAT}
    assert any(node.op_type == "Conv" and node.input[1] in fp32_1d for node in graph.node)  # the STFT's kernels


@pytest.mark.parametrize("kind, params", [
    ("mel", {"window_ms": 64, "hop_ms": 40, "n_mels": 48, "normalise": "frequency"}),  # the bundled model's
    ("mel", {"window_ms": 100, "hop_ms": 40, "n_mels": 64}),  # frames of 2.5 hops
    ("mel", {"window_ms": 50, "hop_ms": 20, "n_fft": 512, "n_mels": 40, "fmin_hz": 100, "fmax_hz": 1800}),
    ("mfcc", {"window_ms": 64, "hop_ms": 40, "n_mfcc": 13}),
])
def test_log_mel_as_matmuls_gives_the_same_features(kind, params):
    from pulmo.export_stft import MatmulMel
    from pulmo.features.spectral import MelConfig, MelFeatures, MfccFeatures

    features = (MelFeatures if kind == "mel" else MfccFeatures)(MelConfig(**params))
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((3, 10_000)).astype(np.float32))
    expected, got = features(x), MatmulMel(features)(x)
    assert got.shape == expected.shape and (got - expected).abs().max() < 1e-4


def test_bundled_lung_model_exports_its_log_mel_as_matmuls(tmp_path, monkeypatch):
    """The bundled (log-mel) lung model: FP32 within 1e-5 of PyTorch's probabilities, without
    onnxruntime's slow STFT; int8 with its average poolings as quantised depthwise convolutions and
    its first (one-channel) convolution in FP32 (results/speed.md)."""
    import onnx

    from pulmo.export import OnnxClassifier, export
    from pulmo.inference.lung_sounds import LungSoundPipeline

    pipe = LungSoundPipeline.from_checkpoint()
    x = torch.from_numpy((0.1 * np.random.default_rng(3).standard_normal((6, pipe.audio.cycle_samples))).astype(np.float32))
    with torch.no_grad():
        expected = torch.softmax(pipe.net.eval()(x), 1).numpy()
    path = export("lung-sounds", None, str(tmp_path / "m.onnx"))
    assert np.abs(torch.softmax(OnnxClassifier(path)(x), 1).numpy() - expected).max() < 1e-5
    assert {"STFT", "ReduceL2"}.isdisjoint(n.op_type for n in onnx.load(str(path)).graph.node)

    monkeypatch.setenv("PULMO_DATA", str(tmp_path / "no-data"))
    with pytest.warns(UserWarning, match="calibrating on synthetic inputs"):
        path8 = export("lung-sounds", None, str(tmp_path / "m8.onnx"), int8=True)
    assert np.abs(torch.softmax(OnnxClassifier(path8)(x), 1).numpy() - expected).max() < 0.1
    graph = onnx.load(str(path8)).graph
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert "AveragePool" not in {n.op_type for n in graph.node} and len(convs) == 12  # 8 + 4 poolings
    assert [c.input[1] in floats for c in convs] == [True] + [False] * 11  # weights of the others dequantised


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    """A randomly initialised one-class YOLOv5n checkpoint on 64-px tiles, its batch-norm statistics
    taken from one batch of noise (with the initial ones, activations vanish and every class
    probability is YOLO's prior)."""
    pytest.importorskip("ultralytics")
    from pulmo.detect.checkpoint import save_detect_checkpoint
    from pulmo.detect.config import DetectExperimentConfig
    from pulmo.models.detector import create_detector

    torch.manual_seed(0)
    det = create_detector("yolov5n", num_classes=1)
    for m in det.net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # the running statistics become this batch's
            m.reset_running_stats()
    with torch.no_grad():
        det.train().net(torch.rand(4, 3, 64, 64))
    cfg = DetectExperimentConfig.from_dict({"name": "tiny-det", "model": {"name": "yolov5n"},
                                            "data": {"color": False, "window_percentile": 0.5},
                                            "tiling": {"tile": 64, "overlap": 16}})
    path = tmp_path_factory.mktemp("det") / "det.pt"
    return save_detect_checkpoint(path, det, cfg, ["object"], {"*": "object"}, {"object": 0.5}, {})


def test_exported_detector_gives_pytorchs_boxes_and_probabilities(tiny_detector, tmp_path):
    from pulmo.detect.checkpoint import build_detector, read_detect_checkpoint
    from pulmo.inference.onnx import OnnxModule
    from pulmo.export import export

    path = export("detect", str(tiny_detector), str(tmp_path / "det.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx"]  # nothing else left by the exporter
    det = build_detector(read_detect_checkpoint(tiny_detector))
    onnx_net = OnnxModule(path)
    rng = np.random.default_rng(0)
    for shape in ((3, 3, 64, 64), (1, 3, 96, 64)):  # batch and tile size are dynamic
        x = torch.from_numpy(rng.random(shape, dtype=np.float32))
        with torch.no_grad():
            expected = det.net(x)[0].numpy()
        got = onnx_net(x).numpy()
        assert got.shape == expected.shape
        assert np.abs(got[:, 4:] - expected[:, 4:]).max() < 1e-4  # class probabilities
        assert np.abs(got[:, :4] - expected[:, :4]).max() < 1e-3 * np.abs(expected[:, :4]).max()  # boxes, pixels
        assert expected[:, 4:].std() > 0.05
    with torch.no_grad():
        expected = det.predict(x, conf=0.01)
    det.net = onnx_net
    for (b0, s0, l0), (b1, s1, l1) in zip(expected, det.predict(x, conf=0.01)):
        assert len(s0) > 0 and len(s0) == len(s1) and (l0 == l1).all()
        assert np.abs(b0 - b1).max() < 1e-2 and np.abs(s0 - s1).max() < 1e-4


def test_evaluate_detect_with_the_onnx_runtime_matches_torch(tiny_detector, tmp_path, monkeypatch, capsys):
    from pulmo.data.adapters.synthetic_xray import write_synthetic_body_scans

    root = write_synthetic_body_scans(tmp_path / "scans", {"test": 2}, seed=0, height=120, width=100, n_objects=(1, 2))
    monkeypatch.setenv("PULMO_CACHE", str(tmp_path / "cache"))
    reports = evaluate_per_runtime("detect", root, tiny_detector, capsys)
    assert reports["onnx"]["runtime"] == "onnx" and list((tmp_path / "cache" / "onnx").glob("detect-*.onnx"))
    for key in ("tp", "fp", "fn", "n"):
        assert reports["onnx"][key] == reports["torch"][key]


@contextmanager
def served(storage, checkpoints: dict[str, str]):
    """A live ``pulmo serve`` of ``checkpoints`` on loopback, one worker, SQLite under ``storage``."""
    pytest.importorskip("fastapi")
    from pulmo.serve.app import ServeSettings
    from tests.serve_helpers import LiveServer, fresh_db

    storage.mkdir()
    with fresh_db(storage) as url, LiveServer(ServeSettings(storage, url, workers=1, checkpoints=checkpoints)) as srv:
        yield srv


def test_analyze_and_serve_take_a_runtime(tiny_detector, tmp_path, monkeypatch, capsys):
    from pulmo.data.adapters.synthetic_xray import synthetic_body_scan
    from pulmo.data.xray_image import save_xray

    monkeypatch.setenv("PULMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PULMO_RUNTIME", "torch")  # put back after the test: --runtime sets it for the front door
    scan = tmp_path / "scan.png"
    save_xray(synthetic_body_scan(np.random.default_rng(5), height=120, width=100, n_objects=(1, 2))[0], scan)
    results = {}
    for runtime in ("torch", "onnx"):
        assert main(["analyze", str(scan), "--task", "detect", "--checkpoint", str(tiny_detector), "--json",
                     "--runtime", runtime]) == 0
        results[runtime] = json.loads(capsys.readouterr().out)[0]
    assert list((tmp_path / "cache" / "onnx").glob("detect-*.onnx"))
    assert results["onnx"]["table"] == results["torch"]["table"]
    assert results["onnx"]["model"]["runtime"] == "onnx" and "runtime" not in results["torch"]["model"]
    monkeypatch.setenv("PULMO_RUNTIME", "onnx-int8")  # the service's workers: an int8 export appears in the cache
    monkeypatch.setenv("PULMO_DATA", str(tmp_path / "no-data"))  # (calibrated on synthetic inputs)
    with pytest.warns(UserWarning, match="synthetic"), served(tmp_path / "serve", {"detect": str(tiny_detector)}) as srv:
        status, accepted = srv.upload("scan.png", scan.read_bytes(), task="detect")
        assert status == 202 and srv.wait(accepted["id"])["status"] == "done"
    assert list((tmp_path / "cache" / "onnx").glob("detect-*-int8.onnx"))
    for argv in (["analyze", str(scan), "--task", "resp-rate"], ["serve", "--storage", str(tmp_path / "serve"),
                                                                  "--checkpoint", f"resp-rate={tiny_detector}"]):
        assert main([*argv, "--runtime", "onnx-int8"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not available for resp-rate" in err


def test_int8_detector_is_calibrated_on_training_tiles(tiny_detector, tmp_path, monkeypatch):
    import warnings

    import onnx

    from pulmo.data.adapters.synthetic_xray import write_synthetic_body_scans
    from pulmo.detect.checkpoint import build_detector, read_detect_checkpoint
    from pulmo.detect.export import calibration_tiles
    from pulmo.inference.onnx import OnnxModule
    from pulmo.export import export

    write_synthetic_body_scans(tmp_path / "data" / "xray_det", {"train": 3}, seed=1, height=120, width=100)
    monkeypatch.setenv("PULMO_DATA", str(tmp_path / "data"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback to synthetic calibration inputs
        path = export("detect", str(tiny_detector), str(tmp_path / "d8.onnx"), int8=True)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["d8.onnx"]
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(str(path)).graph.node}
    x = torch.from_numpy(calibration_tiles(tiny_detector, tmp_path / "data" / "xray_det", 3, np.random.default_rng(2)))
    with torch.no_grad():
        expected = build_detector(read_detect_checkpoint(tiny_detector)).net(x)[0].numpy()
    got = OnnxModule(path)(x).numpy()
    # a random network magnifies int8 rounding at a few anchors; int8 accuracy on real data: results/speed.md
    assert got.shape == expected.shape and np.median(np.abs(got[:, 4:] - expected[:, 4:])) < 0.01


@pytest.mark.parametrize("task", ["lung-sounds", "resp-rate"])
def test_an_export_that_crashes_leaves_nothing_the_cache_would_use(task, tmp_path, monkeypatch):
    """The cache writes under a temporary name and renames when done: a crash mid-export (here
    after half a file or folder is written) leaves no cached export, and the next call exports again."""
    import pulmo.export as export

    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setenv("PULMO_CACHE", str(tmp_path / "cache"))
    calls = []

    def half_then_crash(task_, source, out, int8):
        calls.append(out)
        if task_ in export.FOLDER_EXPORTS:
            out.mkdir(parents=True)
            out = out / "net0.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"half")
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_model", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        export.cached_export(checkpoint, task=task)
    assert [p.name for p in (tmp_path / "cache" / "onnx").iterdir()] == [calls[0].name]  # only the temporary one
    path = export.cached_export(checkpoint, task=task)
    assert path.exists() and ".partial" not in path.name and not calls[1].exists() and len(calls) == 2
    assert export.cached_export(checkpoint, task=task) == path and len(calls) == 2  # cached: not exported again
