"""Helpers of the benchmark scripts that shape what the results pages report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


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
