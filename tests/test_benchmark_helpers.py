"""Helpers of the benchmark scripts that shape what the results pages report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_mean_std_is_the_sample_spread_of_the_values_given():
    from bench_format import mean_std

    assert mean_std([0.5, 0.7, None, float("nan")]) == "0.600 ± 0.141"  # sample std (ddof 1) of 0.5 and 0.7
    assert mean_std([0.41234], digits=2) == "0.41"  # one value: no spread to report
    assert mean_std([None], missing="n/a") == "n/a" and mean_std([]) == "-"


def test_detection_report_per_seed_f1_round_trip_and_summary():
    from xray_detect import format_seed_f1, parse_seed_f1, seed_summary

    text = format_seed_f1({1: 0.37451, 0: 0.30047})
    assert text == "0:0.3005;1:0.3745" and parse_seed_f1(text) == {0: 0.3005, 1: 0.3745}
    assert parse_seed_f1("") == {}
    assert seed_summary("0:0.3005") == "-"  # one seed: no spread to report
    assert seed_summary(text) == "0.3375 ± 0.0523 (n=2)"
    with pytest.raises(ValueError):
        parse_seed_f1("0-0.3")


def test_icbhi_linear_probe_statistics_ignore_gain_and_see_spectral_shape():
    import numpy as np
    from icbhi_linear_probe import N_MELS, cycle_statistics

    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000).astype(np.float32)
    stats = cycle_statistics(noise, 16000)
    assert stats.shape == (3 * N_MELS,) and np.isfinite(stats).all()
    np.testing.assert_allclose(cycle_statistics(10 * noise, 16000), stats, atol=1e-3)  # the cycle's level is removed
    tone = np.sin(2 * np.pi * 400 * np.arange(16000) / 16000).astype(np.float32) + 0.01 * noise
    assert np.abs(cycle_statistics(tone, 16000)[:N_MELS] - stats[:N_MELS]).max() > 1.0
    assert cycle_statistics(noise[:100], 16000).shape == (3 * N_MELS,)  # shorter than one frame: padded


def test_composite_breathing_member_ranks_by_its_chosen_gate_real_validation_first():
    from resp_rate_composite import choose_breathing

    def study(real: float, synthetic: float) -> dict:
        # another gate scores better, but only the chosen gate's figures count
        return {"gate": "chosen", "gate_selection": {"chosen": {"rrujo_val_mae": real, "synthetic_val_mae": synthetic},
                                                      "other": {"rrujo_val_mae": 0.0, "synthetic_val_mae": 0.0}}}

    assert choose_breathing([study(0.28, 3.21), study(0.28, 2.91), study(0.30, 1.0)]) == 1
    assert choose_breathing([study(0.30, 1.0), study(0.28, 3.21)]) == 1
    assert choose_breathing([study(0.28, 2.91), study(0.28, 2.91)]) == 0


def test_composite_vote_gate_and_check_are_chosen_together_real_validation_first():
    """choose_gate ranks every (who votes, gate, check) by RRuJO- then synthetic-validation
    MAE; exact ties go to the composites voting alone, then to the fewest windows handed over."""
    from resp_rate_composite import choose_gate

    class Val:
        def __init__(self, mae):
            self.mae = mae

        def report(self, vote, gate, check):
            return {"mae": self.mae(vote, gate, check)}

    flat = Val(lambda v, g, c: 1.0)
    assert choose_gate(flat, flat)[:3] == ("composite", None, None)
    mixed_better_on_real = Val(lambda v, g, c: 0.9 if v == "composite+breathing" and g == 22.0 else 1.0)
    assert choose_gate(mixed_better_on_real, flat)[:3] == ("composite+breathing", 22.0, None)
    mixed_better_on_synthetic_only = Val(lambda v, g, c: 2.0 if v == "composite+breathing" else 3.0)
    vote, _, _, table = choose_gate(flat, mixed_better_on_synthetic_only)
    assert vote == "composite+breathing" and len(table) == 24


def test_composite_benchmark_votes_as_the_shipped_vote_predictor_does():
    """Scored's rate-member vote equals VotePredictor's on the same members (pooled fits), and
    ``pool=False`` gives the median of the members' own rates."""
    from types import SimpleNamespace

    import numpy as np
    from resp_rate_composite import Scored

    from pulmo.data.adapters.synthetic_breath import synth_breath
    from pulmo.losses.rate_bins import rate_bin_centres
    from pulmo.resp_rate.config import ClipConfig
    from pulmo.resp_rate.net import WindowPredictions
    from pulmo.resp_rate.predictor import VotePredictor, predict_with_own_clip

    bins = rate_bin_centres(48, 3.0, 60.0).numpy()

    def leaning(rate_bpm: float, sigma: float) -> np.ndarray:
        p = np.exp(-0.5 * ((np.log(bins) - np.log(rate_bpm)) / sigma) ** 2)
        return p / p.sum()

    class Member:
        clip = ClipConfig(window_s=15.0, min_s=12.0, max_s=15.0, posterior_weight=1.0)

        def __init__(self, probs: np.ndarray) -> None:
            self.probs = probs

        def windows(self, samples: np.ndarray) -> WindowPredictions:
            breath = np.tile([0.0, 1.0, 0.0], (4, 1))  # normal breathing: the rate member's windows everywhere
            return WindowPredictions(np.arange(4.0), 15.0, np.full(4, 13.0), np.full(4, 3.0), breath,
                                     np.tile([0.9, 0.1], (4, 1)), np.tile(self.probs, (4, 1)), bins)

        def predict(self, samples: np.ndarray):
            return predict_with_own_clip(self, samples)

    audio = synth_breath(60.0, 18.0, 2000, np.random.default_rng(3), irregularity=0.0).audio
    unsure = 0.8 * leaning(9.5, 0.3) + 0.2 * leaning(17.0, 0.3)
    members = [Member(leaning(17.0, 0.05)), Member(unsure), Member(unsure)]
    scored = Scored([SimpleNamespace(samples=audio, rate_bpm=18.0, key="r", group="g")], members, members)
    assert scored.rates("rate") == pytest.approx([VotePredictor(members).predict(audio).rate_bpm])
    assert scored.rates("rate")[0] == pytest.approx(18.0, abs=0.3)
    assert scored.rates("rate", pool=False)[0] == pytest.approx(np.median([m.predict(audio).rate_bpm for m in members]))
    assert scored.rates("rate", pool=False)[0] == pytest.approx(9.0, abs=0.3)


def test_cxr_sources_end_to_end_row_trains_the_whole_network_on_a_fold(monkeypatch):
    """The LOSO benchmark's V-BreathNet row: the network of its config, trained on the fold's
    images, gives logits for any images and an epoch from 1 to the configured count."""
    import numpy as np
    import torch

    import cxr_sources
    from pulmo.cxr.config import load_cxr_config

    def tiny(row, seed):
        return load_cxr_config(cxr_sources.ROOT / "configs" / "experiments" / cxr_sources.ROWS[row]["end_to_end"],
                               {"classes": ["Covid", "Normal", "Viral Pneumonia"], "image": {"size_px": 32},
                                "train": {"seed": seed, "epochs": 2, "batch_size": 8}})

    monkeypatch.setattr(cxr_sources, "end_to_end_config", tiny)
    x = torch.rand(24, 1, 32, 32)
    y = np.arange(24) % 3
    logits, epoch = cxr_sources.fit_end_to_end("vbreathnet", x, y, np.arange(18), np.arange(18, 24), seed=0)
    assert logits(np.array([0, 5, 23])).shape == (3, 3) and 1 <= epoch <= 2
    assert "end_to_end" in cxr_sources.ROWS["vbreathnet"] and cxr_sources.ROWS["vbreathnet"]["explored_after_choice"]


def test_cxr_sources_averaged_logits_are_the_log_of_the_mean_probability():
    """Averaging over heads and views: the softmax of the result is the mean of every head's
    softmax on every view (so temperature and threshold fit on it as on any logits)."""
    import numpy as np
    import torch
    from scipy.special import softmax

    import cxr_sources

    torch.manual_seed(0)
    heads = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 9, 3)).eval() for _ in range(2)]
    views = [np.random.default_rng(v).standard_normal((5, 8, 3, 3)).astype(np.float32) for v in range(3)]
    with torch.no_grad():
        expected = np.mean([softmax(h(torch.from_numpy(v)).numpy(), axis=1) for h in heads for v in views], axis=0)
    assert softmax(cxr_sources.averaged_logits(heads, views), axis=1) == pytest.approx(expected, abs=1e-5)


def test_cxr_sources_later_rules_need_gain_wins_and_guard():
    """A later rule's row qualifies only with a mean gain of 0.02, enough paired seed wins and its
    guard figure no worse than the bundled recipe's."""
    import cxr_sources

    base = {"pooled_macro_f1": [0.30, 0.30, 0.30], "ece_after": [0.3] * 3, "adult_macro_f1": [0.25] * 3}
    rows = {"gap_crop_srcbal_harmonize_tta": {"pooled_macro_f1": [0.34, 0.33, 0.33], "ece_after": [0.3] * 3,
                                              "adult_macro_f1": [0.2] * 3},  # qualifies
            "gap_crop_srcbal_harmonize_ens3": {"pooled_macro_f1": [0.40, 0.38, 0.29], "ece_after": [0.3] * 3,
                                               "adult_macro_f1": [0.3] * 3},  # loses one seed: all 3 needed
            "gap_seg_srcbal_harmonize": {"pooled_macro_f1": [0.40, 0.38, 0.29], "ece_after": [0.3] * 3,
                                         "adult_macro_f1": [0.3] * 3},  # 2 of 3 are enough here
            "gap_segmask_srcbal_harmonize": {"pooled_macro_f1": [0.40, 0.40, 0.40], "ece_after": [0.3] * 3,
                                             "adult_macro_f1": [0.2] * 3}}  # adult figure lower
    md = "\n".join(cxr_sources.later_decisions({cxr_sources.BASE_RECIPE: base, **rows}))
    lines = {r: next(line for line in md.splitlines() if line.startswith(f"| {r} |")) for r in rows}
    assert [lines[r].endswith("| yes |") for r in rows] == [True, False, True, False]
    assert "Chosen: **gap_crop_srcbal_harmonize_tta**" in md and "Chosen: **gap_seg_srcbal_harmonize**" in md
