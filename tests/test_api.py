"""The one Python API (``pulmo.load`` / ``pulmo.list_models``) and the model catalog."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pulmo
from pulmo.catalog import checkpoint_metadata, list_models
from pulmo.cli import main
from pulmo.errors import CheckpointError, ConfigError
from pulmo.frontdoor.inputs import InputRejected
from tests.frontdoor_fixtures import baggage_like

ASSETS = Path(pulmo.__file__).resolve().parent / "assets"


def test_each_task_has_one_default_and_every_card_its_own_stored_metrics():
    cards = list_models()
    defaults = [c.task for c in cards if c.default]
    assert sorted(defaults) == sorted(set(defaults)) and {"lung-sounds", "resp-rate", "cxr"} <= set(defaults)
    short = next(c for c in cards if c.name == "resp-rate-short")
    assert "test_clips" in short.metrics and short.metrics != next(c for c in cards if c.name == "resp-rate").metrics


def test_listing_models_reads_no_weights_and_imports_no_torch():
    code = "import sys, pulmo; pulmo.list_models(); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_checkpoint_metadata_refuses_a_pickle_that_would_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (subprocess.call, (["true"],))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"task": "cxr", "x": Evil()}))
    with pytest.raises(CheckpointError, match="not a readable pulmo checkpoint"):
        checkpoint_metadata(path)


def test_load_refuses_unknown_names_and_devices_it_cannot_use():
    with pytest.raises(CheckpointError, match="unknown model 'lungs'.*lung-sounds"):
        pulmo.load("lungs")
    with pytest.raises(ConfigError, match="CPU only"):
        pulmo.load("resp-rate", device="cuda")


def test_an_array_and_its_file_give_the_same_rate_and_silence_gets_none(tmp_path):
    model = pulmo.load("resp-rate")
    path = ASSETS / "demo_breath.flac"
    samples, rate = sf.read(path, dtype="float32")
    from_file, from_array = model.predict(path), model.predict(samples, sample_rate=rate)
    assert from_array.rate_bpm == pytest.approx(from_file.rate_bpm, abs=1e-3) and from_array.source == "<array>"
    assert from_file.to_dict()["summary"].endswith(("breaths/min", "(uncertain)")) and "path" not in from_file.to_dict()
    with pytest.raises(InputRejected, match="<array>: digital silence"):
        model.predict(np.zeros(rate * 20, np.float32), sample_rate=rate)
    with pytest.raises(ConfigError, match="sample_rate"):
        model.predict(samples)


def test_the_chest_model_refuses_a_colour_scan_given_as_an_array():
    with pytest.raises(InputRejected, match="colour image"):
        pulmo.load("cxr").predict((baggage_like() * 255).astype(np.uint8))


def test_version_flag_and_models_marks_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"pulmo {pulmo.__version__}"
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "resp-rate (default): task resp-rate" in out and "resp-rate-short: task resp-rate" in out
    assert "stored test clips figures: mae" in out
    # the chest model's figures come from held-out sources: said so, not called validation figures
    assert "stored figures, leave-one-source-out" in out and "stored validation figures" not in out


def test_every_command_line_option_says_what_it_does():
    import argparse

    from pulmo.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help and action.dest != "help":
                missing.append(f"{path} {action.dest}")

    walk(build_parser(), "pulmo")
    assert not missing, f"options without help: {missing}"


def test_load_runs_a_lung_sound_model_in_onnxruntime_with_the_same_probabilities(tiny_lung_checkpoint, tmp_path,
                                                                                  monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("PULMO_CACHE", str(tmp_path / "cache"))
    root, ckpt = tiny_lung_checkpoint
    audio = sorted((root / "audio").glob("*.wav"))[0]
    eager = pulmo.load(ckpt).predict(audio)
    onnx = pulmo.load(ckpt, runtime="onnx")
    assert onnx.pipeline.model_info["runtime"] == "onnx"
    exported = onnx.predict(audio)
    assert len(exported.cycles) == len(eager.cycles) >= 1
    for a, b in zip(eager.cycles, exported.cycles, strict=True):
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 1e-4
    with pytest.raises(ConfigError, match="resp-rate"):
        pulmo.load("resp-rate", runtime="onnx-int8")
    with pytest.raises(ConfigError, match="unknown runtime"):
        pulmo.load(ckpt, runtime="tensorrt")
