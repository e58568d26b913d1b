"""Respiratory rate end to end on synthetic folders: adapter, training smoke run,
checkpoint, CLI evaluate/analyze, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pulmo.cli import main
from pulmo.data.adapters.breath_csv import load_breath_csv
from pulmo.data.adapters.synthetic_breath import synth_breath, write_breath_folder
from pulmo.engine.checkpoint import read_checkpoint
from pulmo.errors import DataError
from pulmo.resp_rate.config import RespRateConfig, RRDataConfig
from pulmo.resp_rate.data import ClipSampler, load_recordings, subject_folds
from pulmo.resp_rate.net import build_net, save_rr_checkpoint
from pulmo.resp_rate.train import reselect_run, run_rr_experiment
from tests.frontdoor_fixtures import wav as breath_like


@pytest.fixture(scope="module")
def breath_dir(tmp_path_factory) -> Path:
    return write_breath_folder(tmp_path_factory.mktemp("rr") / "breaths", subjects=4, seconds=16.0)


def small_config(root: Path, **train) -> RespRateConfig:
    return RespRateConfig.from_dict({
        "data": {"dataset": "breath_csv", "root": str(root), "folds": 4, "val_fraction": 0.34, "synthetic_fraction": 0.25,
                 "time_compress_fraction": 0.25, "synthetic_bank": 8},
        "clip": {"window_s": 7.0, "hop_s": 3.0},
        "model": {"name": "rr_lstm", "params": {"variant": "tc_lstm", "hidden": 16, "embed": 16}},
        "train": {"epochs": 2, "clips_per_epoch": 32, "batch_size": 16, **train},
        "augment": {"enabled": True},
    })


@pytest.fixture(scope="module")
def checkpoint(breath_dir, tmp_path_factory) -> Path:
    cfg = small_config(breath_dir)
    return save_rr_checkpoint(tmp_path_factory.mktemp("ckpt") / "rr.pt", build_net(cfg), cfg,
                              {"test": {"mae": 1.0, "n": 3}, "subjects": {"train": ["subject00"], "val": [], "test": []}})


def test_adapter_reads_rrujo_layout(breath_dir):
    recs = load_breath_csv(breath_dir)
    assert len(recs) == 12 and {r.rr_bpm for r in recs} == {8.0, 14.0, 20.0}
    assert {r.patient_id for r in recs} == {f"subject{i:02d}" for i in range(4)} and recs[0].label == "normal"


def test_adapter_errors(tmp_path):
    with pytest.raises(DataError, match="labels file not found"):
        load_breath_csv(tmp_path)
    (tmp_path / "labels.csv").write_text("path,rate\na.wav,3\n")
    with pytest.raises(DataError, match="needs columns"):
        load_breath_csv(tmp_path)
    (tmp_path / "labels.csv").write_text("path,bpm\nmissing.wav,3\n")
    with pytest.raises(DataError, match="not found"):
        load_breath_csv(tmp_path)


def test_splits_are_subject_disjoint_and_sampler_labels(breath_dir):
    cfg = small_config(breath_dir)
    splits = subject_folds(load_breath_csv(breath_dir), cfg.data)
    subjects = [{r.patient_id for r in splits[k]} for k in ("train", "val", "test")]
    assert all(s for s in subjects) and not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    sampler = ClipSampler(load_recordings(splits["train"], cfg.clip), cfg.clip, cfg.data, cfg.augment, seed=0)
    b = sampler.batch(32)
    n = b["audio"].shape[1]
    assert 4 * 2000 <= n <= 7 * 2000
    np.testing.assert_allclose(b["count"], b["rate"] * n / 2000 / 60, rtol=1e-3)
    assert set(b["noisy"].tolist()) <= {0, 1} and b["rate"].max() <= 60


def test_rate_stretch_fills_the_gaps_between_paced_rates(breath_dir):
    """Stretched real clips carry their rate times the resampling factor (within the configured
    range); without stretch every real clip keeps its recording's rate."""
    from pulmo.errors import ConfigError

    cfg = small_config(breath_dir)
    cfg.data.synthetic_fraction = cfg.data.time_compress_fraction = 0.0
    recs = load_recordings(load_breath_csv(breath_dir), cfg.clip)
    plain = ClipSampler(recs, cfg.clip, cfg.data, cfg.augment, seed=0).batch(64)
    assert set(plain["rate"].tolist()) <= {8.0, 14.0, 20.0}
    cfg.data.rate_stretch_fraction, cfg.data.rate_stretch_range = 1.0, [0.8, 1.25]
    b = ClipSampler(recs, cfg.clip, cfg.data, cfg.augment, seed=0).batch(64)
    rates = b["rate"].numpy()
    assert rates.min() >= 8.0 * 0.8 - 1e-4 and rates.max() <= 20.0 * 1.25 + 1e-4
    assert len(set(np.round(rates, 3)) - {8.0, 14.0, 20.0}) > 50
    np.testing.assert_allclose(b["count"], b["rate"] * b["audio"].shape[1] / 2000 / 60, rtol=1e-3)
    with pytest.raises(ConfigError, match="rate_stretch_range"):
        RRDataConfig(rate_stretch_range=[1.2, 0.9])


def test_training_smoke_run_writes_checkpoint(breath_dir, tmp_path):
    metrics = run_rr_experiment(small_config(breath_dir), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.pt").is_file() and metrics["test"]["n"] == 3
    assert set(metrics["test"]) >= {"mae", "mse", "ccc", "pearson", "window", "mse_by_range"}
    check = metrics["refine"]["three_halves_check"]
    assert check["selected"] == (check["val_mae_on"] < check["val_mae_off"])
    bundle = read_checkpoint(tmp_path / "run" / "model.pt")
    assert bundle["audio"]["three_halves_check"] == check["selected"]
    assert bundle["audio"]["refine_tolerance"] == metrics["refine"]["selected_tolerance"]
    # redoing the post-training choice of the finished run changes nothing
    again = reselect_run(tmp_path / "run")
    assert json.loads(json.dumps(again["refine"])) == json.loads(json.dumps(metrics["refine"])) and again["test"]["mae"] == pytest.approx(metrics["test"]["mae"])


def test_training_with_a_rate_bin_head_chooses_among_refinement_and_posterior_on_validation(breath_dir, tmp_path):
    cfg = small_config(breath_dir, epochs=1)
    cfg.model.params["rate_bins"] = 16
    cfg.loss.rate_bins_weight = 0.3
    metrics = run_rr_experiment(cfg, tmp_path / "run", progress=False)
    refine = metrics["refine"]
    assert set(refine["val_mae_by_posterior_weight"]) == {0.25, 0.5, 1.0, 2.0, 4.0}
    every = list(refine["val_mae_by_tolerance"].values()) + list(refine["val_mae_by_posterior_weight"].values())
    assert refine["three_halves_check"]["val_mae_off"] == min(every)  # the chosen way is the best on validation
    audio = read_checkpoint(tmp_path / "run" / "model.pt")["audio"]
    assert audio["posterior_weight"] == refine["selected_posterior_weight"]
    if audio["posterior_weight"] is not None:
        assert audio["refine_tolerance"] == 0.0


def test_cli_evaluate_json(breath_dir, checkpoint, capsys):
    assert main(["evaluate", "--task", "resp-rate", "--data", str(breath_dir), "--checkpoint", str(checkpoint), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"mae", "mse", "ccc", "pearson", "n", "model", "checkpoint", "checkpoint_sha256"} <= set(report)
    # the default test split leaves out the subject the checkpoint was trained on
    assert report["n"] == 9 and report["excluded_seen_subject_recordings"] == 3 and report["window"]["n"] > 9
    assert main(["evaluate", "--task", "resp-rate", "--data", str(breath_dir), "--checkpoint", str(checkpoint),
                 "--split", "all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12


def test_evaluate_scores_short_recordings_with_the_short_clip_model(checkpoint, tmp_path):
    """Recordings too short for the main model go to the short-clip pipeline when one is given;
    per_model splits the scores; without it the first short recording is a clear error."""
    from pulmo.inference.resp_rate import RespRatePipeline, evaluate_folder

    root = write_breath_folder(tmp_path / "mixed", subjects=2, rates_bpm=(10.0, 16.0), seconds=16.0)
    with (root / "labels.csv").open("a") as fh:
        for i, rate in enumerate((8.0, 20.0)):
            _write(root / f"short{i}.wav", synth_breath(6.0, rate, 2000, np.random.default_rng(i)).audio)
            fh.write(f"short{i}.wav,synthetic,{rate:g},subject9{i}\n")
    cfg = small_config(root)
    cfg.clip.window_s, cfg.clip.min_s, cfg.clip.max_s = 15.0, 12.0, 15.0
    long_ckpt = save_rr_checkpoint(tmp_path / "long.pt", build_net(cfg), cfg, {"subjects": {"train": [], "val": []}})
    main_pipe, short_pipe = RespRatePipeline.from_checkpoint(long_ckpt), RespRatePipeline.from_checkpoint(checkpoint)
    report = evaluate_folder(main_pipe, root, split="all", short=short_pipe)
    assert report["n"] == 6 and {m: r["n"] for m, r in report["per_model"].items()} == {"long.pt": 4, "rr.pt": 2}
    assert report["short_clip_model"]["checkpoint"] == "rr.pt"
    with pytest.raises(DataError, match="short0.wav is 6.00 s long, shorter than the model's shortest clip of 12 s"):
        evaluate_folder(main_pipe, root, split="all")


def test_cli_analyze_track_and_plot(breath_dir, checkpoint, tmp_path, capsys):
    wav = breath_dir / "audio" / "14" / "subject00.flac"
    assert main(["analyze", str(wav), "--task", "resp-rate", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "breaths/min" in text and "heavy" in text
    track = json.loads((tmp_path / "subject00.json").read_text())
    assert len(track["windows"]) == 4 and {"rate_bpm", "heavy", "noisy"} <= set(track["windows"][0])
    assert (tmp_path / "subject00_rate_track.png").stat().st_size > 1000 and (tmp_path / "subject00.html").is_file()


def test_clip_shorter_than_a_window_is_one_window(checkpoint, tmp_path):
    """A 5 s clip (between the 4 s shortest training clip and the 7 s scoring window) is
    scored as one window of its own length, not refused."""
    from pulmo.inference.resp_rate import RespRatePipeline

    rng = np.random.default_rng(1)
    path = _write(tmp_path / "five.wav", 0.1 * rng.standard_normal(2000 * 5).astype(np.float32))
    pipe = RespRatePipeline.from_checkpoint(checkpoint)
    w = pipe.windows(pipe.load(path))
    assert w.window_s == pytest.approx(5.0) and len(w.rate_bpm) == 1 and np.isfinite(w.rate_bpm).all()
    track = pipe.analyze_file(path)
    assert len(track.windows) == 1 and track.windows[0].end_s == pytest.approx(5.0)


def test_model_without_heavy_training_says_heavy_is_not_assessed(breath_dir, tmp_path):
    """A checkpoint trained on real paced clips only (no synthetic or time-compressed clips)
    never saw heavy breathing: the front door says so instead of reporting 0 % heavy."""
    from pulmo.frontdoor.resp_rate import RespRateCapability

    cfg = small_config(breath_dir)
    cfg.data.synthetic_fraction = cfg.data.time_compress_fraction = 0.0
    ckpt = save_rr_checkpoint(tmp_path / "rate_only.pt", build_net(cfg), cfg, {"subjects": {}})
    rng = np.random.default_rng(2)
    wav = _write(tmp_path / "clip.wav", 0.1 * rng.standard_normal(2000 * 8).astype(np.float32))
    analysis = RespRateCapability().analyze(wav, checkpoint=str(ckpt), options={"windows": True})
    assert "heavy breathing not assessed" in analysis.headline
    assert analysis.result["heavy_assessed"] is False and {row[5] for row in analysis.table.rows} == {"n/a"}


def _write(path: Path, samples: np.ndarray, sr: int = 2000) -> Path:
    sf.write(path, samples, sr, subtype="FLOAT")
    return path


@pytest.mark.parametrize("case, message", [
    ("short", "3.0 s of sound; the breathing rate needs at least 4 s"),
    ("silent", "digital silence"),
    ("nan", "NaN"),
    ("garbage", "not a recognised audio"),  # refused by the front door before decoding
    ("missing", "not found"),
])
def test_clear_errors_for_bad_input(case, message, checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / f"{case}.wav"
    if case == "short":
        breath_like(path, seconds=3.0, rate=2000)
    elif case == "silent":
        _write(path, np.zeros(2000 * 10, np.float32))
    elif case == "nan":
        x = 0.1 * rng.standard_normal(2000 * 10).astype(np.float32)
        x[100] = np.nan
        _write(path, x)
    elif case == "garbage":
        path.write_bytes(b"not audio at all" * 10)
    assert main(["analyze", str(path), "--task", "resp-rate", "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_real_rrujo_adapter_and_subject_folds():
    from pulmo.config import default_data_root

    root = default_data_root() / "rrujo"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"RRuJO not found at {root}")
    recs = load_breath_csv(root)
    assert len(recs) == 250 and {r.rr_bpm for r in recs} == {8.0, 10.0, 12.0, 18.0, 20.0}
    assert {r.device for r in recs} == {"RRinervasO", "ThinklabsO"} and len({r.patient_id for r in recs}) == 25
    folds = [subject_folds(recs, RRDataConfig(test_fold=k)) for k in range(5)]
    tests = [{r.patient_id for r in f["test"]} for f in folds]
    assert set().union(*tests) == {r.patient_id for r in recs} and sum(len(t) for t in tests) == 25


def test_bundled_model_tracks_the_demo_recording(capsys):
    from pulmo.inference.bundled import ASSETS, default_checkpoint

    pipe_path = default_checkpoint("resp-rate")
    assert pipe_path.stat().st_size < 6e6
    assert main(["analyze", str(ASSETS / "demo_breath.flac"), "--task", "resp-rate", "--json"]) == 0
    track = json.loads(capsys.readouterr().out)[0]
    calm = [w["rate_bpm"] for w in track["windows"] if w["end_s"] <= 20]
    heavy = [w for w in track["windows"] if w["start_s"] >= 20 and w["end_s"] <= 40]
    # the demo breathes at 12 bpm, then 40 bpm: the track must rise and flag heavy breathing there
    assert np.median([w["rate_bpm"] for w in heavy]) > np.median(calm) + 10
    assert np.mean([w["heavy"] for w in heavy]) > 0.5 > np.mean([r > 30 for r in calm])


def test_bundled_rate_only_model_says_it_does_not_assess_heavy():
    """The second bundled model (15 s windows, trained on paced real clips only) reports that
    it does not assess heavy breathing."""
    from pulmo.inference.bundled import ASSETS
    from pulmo.inference.resp_rate import RespRatePipeline

    pipe = RespRatePipeline.from_checkpoint(ASSETS / "resp_rate_lstm_window15.pt")
    assert pipe.heavy_assessed is False and pipe.clip.window_s == 15.0
    assert pipe.analyze_file(ASSETS / "demo_breath.flac").heavy_assessed is False


@pytest.mark.parametrize("checkpoint_name", ["resp_rate_composite.pt", "resp_rate_lstm_window15.pt"])
def test_bundled_models_on_unseen_rrujo_subjects(checkpoint_name):
    """Real-data smoke check (skipped without RRuJO): the first 10 recordings of subjects the
    bundled default (vote of composites) and rate-only (vote) models never trained or validated on, scored like `pulmo evaluate`."""
    from pulmo.config import default_data_root
    from pulmo.inference.bundled import ASSETS
    from pulmo.inference.resp_rate import RespRatePipeline, evaluate_folder

    root = default_data_root() / "rrujo"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"RRuJO not found at {root}")
    report = evaluate_folder(RespRatePipeline.from_checkpoint(ASSETS / checkpoint_name), root, limit=10)
    assert report["n"] == 10 and report["excluded_seen_subject_recordings"] == 200
    # below the DSP baseline (2.69 on all 50 unseen recordings); measured on these 10: 1.07 for both models (the
    # default takes the rate member's rate on every one of them); on all 50: 0.51 (default) and 0.39 (rate-only)
    assert report["mae"] < 1.5
