"""Cycle segmentation of unannotated recordings and the boundary F1 that scores it."""

import numpy as np
import pytest

from pulmo.data.segmentation import SegmenterConfig, breathing_period, breath_envelope, segment_cycles
from pulmo.errors import DataError
from pulmo.metrics.segmentation import boundary_f1, matched_boundaries

SR = 4000


def breathing(period_s: float, cycles: int, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Band-limited noise bursts: inspiration 35 %, expiration 45 %, pause 20 % of each cycle.

    Returns the samples and the true cycle starts (start of each inspiration) in seconds.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(period_s * cycles * SR)) / SR
    phase = (t % period_s) / period_s
    env = np.where(phase < 0.35, np.sin(np.pi * phase / 0.35), 0.0)
    env += np.where((phase >= 0.35) & (phase < 0.8), 0.7 * np.sin(np.pi * (phase - 0.35) / 0.45), 0.0)
    noise = np.convolve(rng.standard_normal(len(t)), np.ones(8) / 8, mode="same")
    return (env * noise + 0.01 * rng.standard_normal(len(t))).astype(np.float32), [k * period_s for k in range(cycles)]


def test_matching_and_f1_against_hand_counts():
    assert matched_boundaries([1.0, 1.4], [1.3, 1.9], 0.5) == 2
    assert matched_boundaries([1.0], [0.6, 1.4], 0.5) == 1       # one-to-one
    assert matched_boundaries([1.0, 5.0], [1.6, 5.5], 0.5) == 1   # 0.6 is outside, 0.5 inside (inclusive)
    s = boundary_f1([1.0, 2.0, 3.0, 9.0], [1.1, 2.2, 7.0], 0.25)
    assert (s["matched"], s["precision"], s["recall"]) == (2, 0.5, 2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert boundary_f1([], [], 0.5)["f1"] == 1.0 and boundary_f1([1.0], [], 0.5)["f1"] == 0.0


@pytest.mark.parametrize("period_s", [2.5, 4.0])
def test_segmenter_finds_the_period_and_the_pauses(period_s):
    x, starts = breathing(period_s, cycles=8)
    seg = segment_cycles(x, SR)
    assert seg.period_s == pytest.approx(period_s, rel=0.1)
    # the quiet pause runs from 0.8 to 1.0 of each cycle: boundaries sit at its end, the next inspiration's onset
    assert boundary_f1(seg.boundaries_s, starts[1:], tolerance_s=0.25)["f1"] == 1.0
    assert boundary_f1(seg.boundaries_s, [s - 0.1 * period_s for s in starts[1:]], tolerance_s=0.05)["f1"] == 0.0
    assert seg.cycles[0][0] == 0.0 and seg.cycles[-1][1] == pytest.approx(len(x) / SR, abs=1e-3)
    assert all(a < b for a, b in seg.cycles)


def test_no_rhythm_falls_back_to_fixed_cycles():
    x = np.random.default_rng(1).standard_normal(12 * SR).astype(np.float32)
    cfg = SegmenterConfig(min_periodicity=0.9)
    seg = segment_cycles(x, SR, cfg)
    assert seg.period_s is None and seg.boundaries_s == pytest.approx([3.0, 6.0, 9.0])
    assert breathing_period(breath_envelope(x, SR, cfg), cfg) is None


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="NaN"):
        segment_cycles(np.array([0.0, np.nan] * 4000, dtype=np.float32), SR)
    with pytest.raises(DataError, match="mono"):
        segment_cycles(np.zeros((2, 100), dtype=np.float32), SR)
