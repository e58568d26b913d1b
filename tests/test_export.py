"""ONNX export of the lung-sound model: same probabilities as PyTorch, and the ONNX runtime
gives the same ICBHI report through ``pulmo evaluate --runtime onnx``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pulmo.cli import main
from pulmo.errors import ConfigError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


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
    reports = {}
    for runtime in ("torch", "onnx"):
        assert main(["evaluate", "--task", "lung-sounds", "--data", str(root), "--split", "test", "--checkpoint",
                     str(ckpt), "--json", "--runtime", runtime]) == 0
        reports[runtime] = json.loads(capsys.readouterr().out)
    assert reports["onnx"]["runtime"] == "onnx" and list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert reports["onnx"]["score"] == pytest.approx(reports["torch"]["score"], abs=0.005)


def test_tasks_without_an_exporter_say_so():
    from pulmo.export import export

    with pytest.raises(ConfigError, match="not in this version"):
        export("detect", None, "x.onnx")


def test_exported_chest_model_gives_the_same_logits(tmp_path):
    from pulmo.export import OnnxClassifier, export
    from pulmo.inference.cxr import CxrPipeline
    from tests.frontdoor_fixtures import chest_phantom

    pipe = CxrPipeline.from_checkpoint()
    grays = [chest_phantom(256, seed) for seed in range(3)]
    expected = pipe.logits(grays)
    pipe.model = OnnxClassifier(export("cxr", None, str(tmp_path / "cxr.onnx")))
    assert np.abs(pipe.logits(grays) - expected).max() < 1e-3


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
