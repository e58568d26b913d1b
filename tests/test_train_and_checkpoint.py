import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pulmo.config import ExperimentConfig
from pulmo.data.adapters.synthetic import write_icbhi_folder
from pulmo.engine.checkpoint import build_from_checkpoint, read_checkpoint, save_checkpoint
from pulmo.engine.train import build_net, run_experiment
from pulmo.errors import CheckpointError, DataError
from pulmo.inference.lung_sounds import LungSoundPipeline, evaluate_icbhi


def tiny_config(root: Path, **train) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "name": "tiny",
        "data": {"root": str(root), "val_fraction": 0.4},
        "loss": {"name": "class_balanced", "beta": 0.9},
        "train": {"max_epochs": 1, "batch_size": 4, "limit_train_batches": 2, "precision": "32", **train},
    })


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = write_icbhi_folder(tmp_path_factory.mktemp("data") / "icbhi", n_patients=6, seed=3)
    out = tmp_path_factory.mktemp("run")
    metrics = run_experiment(tiny_config(root), out, progress=False)
    return root, out, metrics


def test_smoke_run_writes_everything(trained_run):
    root, out, metrics = trained_run
    for name in ("config.yaml", "metrics.json", "model.pt", "splits/train.jsonl", "splits/val.jsonl", "splits/test.jsonl"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["n"] == 8 and saved["data"]["missing_cycles"] == 4
    assert 0.0 <= saved["val"]["score"] <= 1.0 and len(saved["test"]["confusion_matrix"]) == 4
    train_p = {json.loads(x)["patient_id"] for x in (out / "splits/train.jsonl").read_text().splitlines()}
    val_p = {json.loads(x)["patient_id"] for x in (out / "splits/val.jsonl").read_text().splitlines()}
    assert train_p and val_p and not train_p & val_p


def test_checkpoint_knows_how_to_use_itself(trained_run):
    _, out, _ = trained_run
    bundle = read_checkpoint(out / "model.pt")
    assert bundle["labels"] == ["normal", "crackle", "wheeze", "both"]
    assert bundle["features"]["name"] == "stft" and bundle["audio"]["sample_rate_hz"] == 4000
    assert bundle["config"]["loss"]["name"] == "class_balanced" and bundle["git_commit"]
    assert set(bundle["metrics"]) == {"val", "test"}
    pipe = LungSoundPipeline.from_checkpoint(out / "model.pt")
    probs = pipe.predict_cycles([np.zeros(3000, np.float32), np.ones(12000, np.float32) * 0.01])
    assert probs.shape == (2, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_evaluate_and_analyze(trained_run):
    root, out, metrics = trained_run
    pipe = LungSoundPipeline.from_checkpoint(out / "model.pt")
    report = evaluate_icbhi(pipe, root, "test", progress=False)
    assert report["n"] == 8 and report["cycles_without_audio"] == 4
    assert report["score"] == pytest.approx(metrics["test"]["score"])  # same model, same cycles
    assert report["checkpoint_sha256"] == pipe.model_info["sha256"]
    # --limit keeps the first recordings by name, with or without audio: here 102 and 104 (audio), then 106 (none)
    assert evaluate_icbhi(pipe, root, "test", limit=2, progress=False)["cycles_without_audio"] == 0
    three = evaluate_icbhi(pipe, root, "test", limit=3, progress=False)
    assert three["n"] == 8 and three["cycles_without_audio"] == 4
    wav = root / "audio" / "101_1b1_Al_sc_Meditron.wav"
    res = pipe.analyze_file(wav, annotation=root / "annotations" / "101_1b1_Al_sc_Meditron.txt")
    assert res.segmentation == "annotation" and len(res.cycles) == 4
    assert [c.annotated_label for c in res.cycles] == ["normal", "crackle", "wheeze", "both"]
    windows = pipe.analyze_file(wav, unannotated="windows")
    assert windows.segmentation == "windows" and len(windows.cycles) >= 2
    auto = pipe.analyze_file(wav)
    assert auto.segmentation == "segmenter" and auto.cycles[0].start_s == 0.0
    assert [c.end_s for c in auto.cycles[:-1]] == [c.start_s for c in auto.cycles[1:]]  # contiguous, nothing left out


def test_window_starts_cover_the_whole_recording():
    from pulmo.inference.lung_sounds import window_starts

    assert window_starts(6.0, 2.5, 1.25) == [0.0, 1.25, 2.5, 3.5]
    assert window_starts(5.0, 2.5, 1.25) == [0.0, 1.25, 2.5]
    assert window_starts(1.0, 2.5, 1.25) == [0.0]


def test_save_load_round_trip_fp32_and_fp16(tmp_path):
    cfg = ExperimentConfig()
    net = build_net(cfg, 4).eval()
    x = torch.randn(2, 10000)
    for half in (False, True):
        path = save_checkpoint(tmp_path / f"m{half}.pt", net, cfg, ["normal", "crackle", "wheeze", "both"], {}, half=half)
        again, audio = build_from_checkpoint(read_checkpoint(path))
        tol = 2e-2 if half else 1e-6
        torch.testing.assert_close(again(x), net(x), atol=tol, rtol=tol)
        assert audio == cfg.audio


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a pulmo checkpoint"):
        read_checkpoint(tmp_path / "other.pt")


def test_analyze_rejects_an_annotation_past_the_audio(trained_run, tmp_path):
    root, out, _ = trained_run
    pipe = LungSoundPipeline.from_checkpoint(out / "model.pt")
    ann = tmp_path / "long.txt"
    ann.write_text("0.0\t1.0\t0\t0\n1.0\t60.0\t0\t0\n")  # second cycle ends long after the audio
    with pytest.raises(DataError, match="ends after the audio"):
        pipe.analyze_file(root / "audio" / "101_1b1_Al_sc_Meditron.wav", annotation=ann)
