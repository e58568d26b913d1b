"""The composite and vote resp-rate models: the gate that picks each window's rate, the
vote's median, the checkpoint round trips, and the pipeline using them (seen subjects,
heavy assessment, evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from pulmo.data.adapters.synthetic_breath import write_breath_folder
from pulmo.engine.checkpoint import read_checkpoint
from pulmo.errors import CheckpointError
from pulmo.resp_rate.config import ClipConfig, RespRateConfig
from pulmo.resp_rate.net import WindowPredictions, build_net, save_rr_checkpoint
from pulmo.resp_rate.predictor import (CompositePredictor, NetPredictor, RecordingPrediction, VotePredictor, gate_windows,
                                       predictor_from_checkpoint, save_composite, save_vote, vote_windows)


def _windows(rates: list[float], classes: list[int], noisy: float = 0.1) -> WindowPredictions:
    n = len(rates)
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), classes] = 0.9
    return WindowPredictions(starts_s=np.arange(n, dtype=float), window_s=15.0, rate_bpm=np.array(rates, float),
                             count=np.array(rates, float) / 4, breath_probs=probs,
                             noise_probs=np.tile([1 - noisy, noisy], (n, 1)))


def test_gate_takes_the_breathing_members_rate_outside_normal_breathing():
    rate = _windows([10.0, 12.0, 19.0, 20.0], [1, 1, 1, 1])
    breathing = _windows([0.5, 40.0, 26.0, 21.0], [0, 2, 1, 1], noisy=0.8)  # none, heavy, normal at 26, normal at 21
    w = gate_windows(rate, breathing, None)
    np.testing.assert_allclose(w.rate_bpm, [0.5, 40.0, 19.0, 20.0])
    np.testing.assert_allclose(w.count, [0.125, 10.0, 4.75, 5.0])
    assert w.breath_probs is breathing.breath_probs and w.noise_probs is breathing.noise_probs
    np.testing.assert_allclose(gate_windows(rate, breathing, 25.0).rate_bpm, [0.5, 40.0, 26.0, 20.0])
    np.testing.assert_allclose(gate_windows(rate, breathing, 20.5).rate_bpm, [0.5, 40.0, 26.0, 21.0])


def test_a_heavy_call_at_a_resting_rate_stays_with_the_rate_member():
    rate = _windows([10.0, 12.0, 19.0, 20.0], [1, 1, 1, 1])
    breathing = _windows([0.5, 40.0, 18.0, 21.0], [0, 2, 2, 1])  # none, heavy at 40, heavy at 18, normal
    np.testing.assert_allclose(gate_windows(rate, breathing, None, heavy_above_bpm=25.0).rate_bpm, [0.5, 40.0, 19.0, 20.0])
    np.testing.assert_allclose(gate_windows(rate, breathing, 20.5, heavy_above_bpm=25.0).rate_bpm, [0.5, 40.0, 19.0, 21.0])
    np.testing.assert_allclose(gate_windows(rate, breathing, None).rate_bpm, [0.5, 40.0, 18.0, 20.0])  # the rule off
    ruled = gate_windows(rate, breathing, None, heavy_above_bpm=25.0)
    assert ruled.breath_probs.argmax(1).tolist() == [0, 2, 1, 1]  # the overruled heavy call takes the rate member's class


def test_gate_refuses_windows_that_do_not_line_up():
    with pytest.raises(CheckpointError, match="same windows"):
        gate_windows(_windows([10.0, 12.0], [1, 1]), _windows([10.0], [1]), None)


def _config(root: Path, window_s: float = 7.0, heavy: bool = True) -> RespRateConfig:
    fraction = 0.25 if heavy else 0.0
    return RespRateConfig.from_dict({
        "name": "heavy_net" if heavy else "rate_net",
        "data": {"dataset": "breath_csv", "root": str(root), "synthetic_fraction": fraction, "time_compress_fraction": fraction},
        "clip": {"window_s": window_s, "hop_s": 3.0},
        "model": {"name": "rr_lstm", "params": {"variant": "lstm", "hidden": 8, "embed": 8}},
    })


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_breath_folder(tmp_path_factory.mktemp("rr") / "breaths", subjects=3, seconds=16.0)


@pytest.fixture(scope="module")
def members(folder, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("members")
    torch.manual_seed(0)
    rate_cfg, heavy_cfg = _config(folder, heavy=False), _config(folder)
    return {
        "rate": save_rr_checkpoint(out / "rate.pt", build_net(rate_cfg), rate_cfg,
                                   {"subjects": {"train": ["subject00"], "val": [], "test": ["subject02"]}}),
        "breathing": save_rr_checkpoint(out / "breathing.pt", build_net(heavy_cfg), heavy_cfg,
                                        {"subjects": {"train": ["subject00"], "val": ["subject01"], "test": ["subject02"]}}),
    }


@pytest.fixture(scope="module")
def composite(members, tmp_path_factory) -> Path:
    return save_composite(tmp_path_factory.mktemp("composite") / "composite.pt", "composite(rate_net+heavy_net)",
                          read_checkpoint(members["rate"]), read_checkpoint(members["breathing"]), 25.0, {"test": {"mae": 0.5}})


def test_composite_round_trip_matches_its_members(members, composite):
    bundle = read_checkpoint(composite)
    model = predictor_from_checkpoint(bundle)
    assert isinstance(model, CompositePredictor) and model.gate_above_bpm == 25.0
    assert bundle["metrics"]["subjects"] == {"train": ["subject00"], "val": ["subject01"]}
    rate, breathing = (predictor_from_checkpoint(read_checkpoint(members[k])) for k in ("rate", "breathing"))
    x = np.random.default_rng(0).standard_normal(2000 * 13).astype(np.float32) * 0.1
    expected = gate_windows(rate.windows(x), breathing.windows(x), 25.0)
    got = model.windows(x)
    np.testing.assert_allclose(got.rate_bpm, expected.rate_bpm, rtol=1e-6)
    np.testing.assert_allclose(got.breath_probs, expected.breath_probs, rtol=1e-6)
    assert model.clip == rate.clip
    assert model.heavy_above_bpm is None  # a composite written without the heavy-call rule
    ruled = predictor_from_checkpoint({**bundle, "composite": {**bundle["composite"], "heavy_above_bpm": 25.0}})
    np.testing.assert_allclose(ruled.windows(x).rate_bpm,
                               gate_windows(rate.windows(x), breathing.windows(x), 25.0, 25.0).rate_bpm, rtol=1e-6)


def test_composite_members_must_share_windows(members, folder):
    rate = predictor_from_checkpoint(read_checkpoint(members["rate"]))
    cfg = _config(folder, window_s=15.0)
    other = NetPredictor(build_net(cfg), cfg.clip)
    with pytest.raises(CheckpointError, match="window_s 7.0 vs 15.0"):
        CompositePredictor(rate, other)


def test_composite_refuses_a_composite_member(members, composite, tmp_path):
    with pytest.raises(CheckpointError, match="single-network"):
        save_composite(tmp_path / "x.pt", "x", read_checkpoint(composite), read_checkpoint(members["breathing"]), None, {})


def test_pipeline_on_a_composite(folder, composite):
    """Seen subjects are both members'; heavy breathing is assessed because the breathing
    member learned it (the rate member alone did not); evaluate scores the unseen subject."""
    from pulmo.inference.resp_rate import RespRatePipeline, evaluate_folder

    pipe = RespRatePipeline.from_checkpoint(composite)
    assert pipe.seen_subjects == {"subject00", "subject01"} and pipe.heavy_assessed is True
    report = evaluate_folder(pipe, folder)
    assert report["n"] == 3 and report["excluded_seen_subject_recordings"] == 6
    track = pipe.analyze_file(folder / "audio" / "14" / "subject02.flac")
    assert len(track.windows) == 4 and track.heavy_assessed


def test_doubt_threshold_flags_rates_in_track_evaluation_and_headline(folder, composite, tmp_path):
    """A checkpoint's ``doubt_above`` flags every rate whose doubt exceeds it (doubt >= 0: a
    negative threshold flags all, a huge one none); without one, nothing is assessed."""
    from pulmo.engine.checkpoint import save_checkpoint_dict
    from pulmo.frontdoor.resp_rate import RespRateCapability
    from pulmo.inference.resp_rate import RespRatePipeline, evaluate_folder

    clip = folder / "audio" / "14" / "subject02.flac"
    bundle = read_checkpoint(composite)
    for above, flagged in ((-1.0, True), (1e9, False), (None, None)):
        path = save_checkpoint_dict(tmp_path / f"c{above}.pt", {**bundle, "doubt_above": above})
        pipe = RespRatePipeline.from_checkpoint(path)
        track = pipe.analyze_file(clip)
        assert track.rate_doubt >= 0 and track.rate_uncertain is flagged
        report = evaluate_folder(pipe, folder)
        if flagged is None:
            assert "uncertain" not in report
        else:
            assert report["uncertain"]["n_flagged"] == (3 if flagged else 0)
            assert report["uncertain"]["confident" if not flagged else "flagged"]["n"] == 3
        headline = RespRateCapability().analyze(clip, checkpoint=str(path)).headline
        assert ("uncertain" in headline) is bool(flagged)


def test_bundled_default_is_a_vote_of_composites():
    from pulmo.inference.bundled import default_checkpoint
    from pulmo.inference.resp_rate import aggregate_description

    bundle = read_checkpoint(default_checkpoint("resp-rate"))
    model = predictor_from_checkpoint(bundle)
    assert isinstance(model, VotePredictor) and len(model.members) == 5
    assert all(isinstance(m, CompositePredictor) for m in model.members)
    assert bundle["doubt_above"] > 0  # its doubt threshold, chosen on validation
    assert all(m.rate.clip.posterior_weight is not None for m in model.members)  # rate members fit rate distributions
    text = aggregate_description(model)
    assert text.startswith("the envelope-spectrum peak that best fits the pooled rate distributions of 5")
    assert text.count("mean rate distribution of 15 s windows") == 1 and len(text) < 600  # alike members described once
    # its report states the cross-validated error beside the fixed test split's
    from pulmo.frontdoor.resp_rate import RespRateCapability
    from pulmo.inference.bundled import ASSETS

    evaluation = RespRateCapability().analyze(ASSETS / "demo_breath.flac").result["model"]["evaluation"]
    assert "RRuJO test subjects" in evaluation and "five-fold subject cross-validation (n=250)" in evaluation


def test_vote_windows_take_the_median_rate_and_mean_probabilities():
    a, b, c = _windows([10.0, 12.0], [1, 1]), _windows([20.0, 12.5], [1, 2]), _windows([11.0, 30.0], [0, 2], noisy=0.7)
    w = vote_windows([a, b, c])
    np.testing.assert_allclose(w.rate_bpm, [11.0, 12.5])
    np.testing.assert_allclose(w.count, [2.75, 12.5 / 4])
    np.testing.assert_allclose(w.breath_probs[0], [(0.05 + 0.05 + 0.9) / 3, (0.9 + 0.9 + 0.05) / 3, 0.05])
    np.testing.assert_allclose(w.noise_probs[:, 1], [0.3, 0.3])
    with pytest.raises(CheckpointError, match="same windows"):
        vote_windows([a, _windows([10.0], [1])])


@dataclass
class _FixedRate:
    """A stand-in member: fixed windows and a fixed recording rate."""

    rate_bpm: float
    clip: ClipConfig = field(default_factory=ClipConfig)

    def windows(self, samples: np.ndarray) -> WindowPredictions:
        return _windows([self.rate_bpm] * 3, [1, 1, 1])

    def predict(self, samples: np.ndarray) -> RecordingPrediction:
        return RecordingPrediction(self.windows(samples), self.rate_bpm, self.rate_bpm, 0.0)


def test_vote_rate_is_the_median_of_its_members_rates():
    """One member's octave slip (9 for 18) is outvoted; the windows are merged the same way."""
    vote = VotePredictor([_FixedRate(18.1), _FixedRate(9.0), _FixedRate(17.9)])
    pred = vote.predict(np.zeros(100, np.float32))
    assert pred.rate_bpm == pytest.approx(17.9)
    np.testing.assert_allclose(pred.windows.rate_bpm, [17.9] * 3)
    # members disagree by an octave (ln 18.1/9), none moved its rate, pooled windows 9 x3, 17.9 x3, 18.1 x3
    assert pred.doubt == pytest.approx(np.log(18.1 / 9.0) + (18.1 - 9.0) / 17.9)
    with pytest.raises(CheckpointError, match="window_s 7.0 vs 15.0"):
        VotePredictor([_FixedRate(10.0), _FixedRate(10.0, ClipConfig(window_s=15.0))])


def test_vote_checkpoint_round_trip(members, composite, tmp_path):
    """A vote of a composite and a single network: its rate is the median of the members' own
    recording rates, its seen subjects the union, and nested votes are refused."""
    from pulmo.inference.resp_rate import RespRatePipeline, aggregate_description

    parts = [read_checkpoint(composite), read_checkpoint(members["rate"]), read_checkpoint(members["breathing"])]
    path = save_vote(tmp_path / "vote.pt", "vote(3)", parts, {"test": {"mae": 0.4}})
    bundle = read_checkpoint(path)
    model = predictor_from_checkpoint(bundle)
    assert isinstance(model, VotePredictor) and len(model.members) == 3
    x = np.random.default_rng(1).standard_normal(2000 * 13).astype(np.float32) * 0.1
    expected = np.median([predictor_from_checkpoint(b).predict(x).rate_bpm for b in parts])
    assert model.predict(x).rate_bpm == pytest.approx(expected, rel=1e-6)
    assert bundle["metrics"]["subjects"] == {"train": ["subject00"], "val": ["subject01"]}
    pipe = RespRatePipeline.from_checkpoint(path)
    assert pipe.heavy_assessed is True  # the first member is the composite, whose breathing member learned heavy breathing
    assert aggregate_description(model).startswith("median of the recording rates of 3 models, each: median of 7 s windows")
    assert "from the breathing member where it calls the window none or heavy or reads above 25 bpm" in aggregate_description(model)
    with pytest.raises(CheckpointError, match="single-network or composite"):
        save_vote(tmp_path / "nested.pt", "nested", [bundle], {})
    with pytest.raises(CheckpointError, match="single-network"):
        save_composite(tmp_path / "c.pt", "c", bundle, read_checkpoint(members["breathing"]), None, {})
