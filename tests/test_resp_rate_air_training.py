"""Training the rate networks on a mix that transfers to air microphones: simulator clips,
band-limited copies, and validation on the simulator's held-out settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pulmo.data.adapters.breath_csv import load_breath_csv
from pulmo.data.adapters.synthetic_breath import write_breath_folder
from pulmo.engine.checkpoint import read_checkpoint
from pulmo.errors import ConfigError
from pulmo.resp_rate.air_data import air_bank, air_validation_clips, band_limit
from pulmo.resp_rate.config import RespRateConfig
from pulmo.resp_rate.data import ClipSampler, load_recordings, subject_folds
from pulmo.resp_rate.train import run_rr_experiment


def tiny_config(root: Path, **data) -> RespRateConfig:
    return RespRateConfig.from_dict({
        "data": {"dataset": "breath_csv", "root": str(root), "folds": 4, "val_fraction": 0.34, "air_fraction": 0.5,
                 "air_bank": 3, "air_bank_s": 8.0, "band_limit_fraction": 0.5, "val_air": 2, "val_air_s": 8.0, **data},
        "clip": {"window_s": 7.0, "hop_s": 3.0},
        "model": {"name": "rr_lstm", "params": {"variant": "lstm", "hidden": 8, "embed": 8}},
        "train": {"epochs": 1, "clips_per_epoch": 16, "batch_size": 8, "select_on": "mae"},
        "augment": {"enabled": True},
    })


@pytest.fixture(scope="module")
def breath_dir(tmp_path_factory) -> Path:
    return write_breath_folder(tmp_path_factory.mktemp("rr_air") / "breaths", subjects=4, seconds=16.0)


def test_air_clips_come_at_the_working_rate_with_their_truth():
    bank = air_bank(2, 6.0, 2000, np.random.default_rng(0))
    assert [c.samples.shape for c in bank] == [(12000,), (12000,)] and all(c.samples.dtype == np.float32 for c in bank)
    assert all(c.rate_bpm == 0 or 4 <= c.rate_bpm <= 60 for c in bank)
    val = air_validation_clips(2, 6.0, 2000, seed=3)
    again = air_validation_clips(2, 6.0, 2000, seed=3)
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(val, again))  # seeded: the same clips each time
    assert all(4 <= c.rate_bpm <= 60 for c in val)


def test_band_limit_removes_the_low_band_and_keeps_the_length():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(20000).astype(np.float32)
    y = band_limit(x, 2000, rng)
    spec_x, spec_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(len(x), 1 / 2000)
    low = f < 20
    assert y.shape == x.shape and y.dtype == np.float32
    assert spec_y[low].mean() < 0.1 * spec_x[low].mean()  # below 20 Hz: a 50-500 Hz high-pass takes at least 14 dB


def test_sampler_mixes_air_clips_and_checks_the_fractions(breath_dir):
    cfg = tiny_config(breath_dir)
    recs = load_recordings(subject_folds(load_breath_csv(breath_dir), cfg.data)["train"], cfg.clip)
    sampler = ClipSampler(recs, cfg.clip, cfg.data, cfg.augment, seed=0)
    assert len(sampler.air) == 3
    batch = sampler.batch(8)
    assert batch["audio"].shape[0] == 8 and np.isfinite(batch["audio"].numpy()).all()
    with pytest.raises(ConfigError, match="at most 1"):
        tiny_config(breath_dir, synthetic_fraction=0.7)


def test_training_validates_on_held_out_simulator_settings(breath_dir, tmp_path):
    metrics = run_rr_experiment(tiny_config(breath_dir), tmp_path / "run", progress=False)
    assert metrics["val_air"]["n"] == 2 and metrics["val"]["n"] >= 1  # the air clips are scored apart from the subjects
    assert read_checkpoint(tmp_path / "run" / "model.pt")["metrics"]["val_air"]["n"] == 2


def test_air_rules_make_the_rate_from_the_members():
    from pulmo.resp_rate.air import air_rule_rate

    members = {"dsp_air_band": 12.0, "air_networks": 20.0, "dsp_stethoscope_band": 15.0}
    assert air_rule_rate("air_dsp", members) == 12.0 and air_rule_rate("air_networks", members) == 20.0
    assert air_rule_rate("median", members) == 15.0
    assert air_rule_rate("median", {"dsp_air_band": 12.0, "air_networks": 20.0}) == 16.0  # no baseline: the two
    with pytest.raises(KeyError):
        air_rule_rate("air_networks", {"dsp_air_band": 12.0})
    with pytest.raises(ValueError, match="unknown air rule"):
        air_rule_rate("mean", members)


@pytest.mark.parametrize("rule", ["air_networks", "median"])
def test_a_checkpoint_with_an_air_rule_uses_it_on_air_audio(tmp_path, rule):
    import soundfile as sf

    from pulmo.data.adapters.synthetic_air import AirSettings, synth_air
    from pulmo.engine.checkpoint import save_checkpoint_dict
    from pulmo.inference.resp_rate import RespRatePipeline
    from pulmo.resp_rate.net import build_net, save_rr_checkpoint

    cfg = tiny_config(tmp_path)
    net_path = save_rr_checkpoint(tmp_path / "net.pt", build_net(cfg), cfg, {"subjects": {}})
    bundle = read_checkpoint(net_path)
    bundle["air"] = {"rule": rule, "networks": read_checkpoint(net_path)}
    path = save_checkpoint_dict(tmp_path / "with_air.pt", bundle)
    clip = synth_air(30.0, 15.0, AirSettings(sample_rate_hz=16000, route="mouth", noise="fan", snr_db=25.0),
                     np.random.default_rng(0))
    wav = tmp_path / "air.wav"
    sf.write(wav, clip.audio, 16000)
    est = RespRatePipeline(path).estimate(wav)
    assert est.front_end == "air" and est.rate_source == rule and "air_networks" in est.members
    m = est.members
    expected = m["air_networks"] if rule == "air_networks" else np.median([m["air_networks"], m["dsp_air_band"],
                                                                             m["dsp_stethoscope_band"]])
    assert est.rate_bpm == pytest.approx(expected)
    assert RespRatePipeline(net_path).estimate(wav).rate_source == "air_dsp"  # no air rule bundled: the air band as before
