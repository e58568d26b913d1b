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
