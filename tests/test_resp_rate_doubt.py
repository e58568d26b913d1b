"""The resp-rate doubt score and its threshold (pulmo.resp_rate.doubt), hand-computed."""

from __future__ import annotations

import numpy as np
import pytest

from pulmo.inference.resp_rate import split_by_doubt
from pulmo.resp_rate.doubt import doubt_threshold, rate_doubt


def test_no_doubt_when_members_agree_windows_agree_and_nothing_moved():
    assert rate_doubt([12.0, 12.0], [np.full(5, 12.0), np.full(5, 12.0)], [12.0, 12.0]) == 0.0


def test_each_spread_adds_its_own_term():
    # members disagree: ln(18 / 9)
    assert rate_doubt([9.0, 18.0], [np.full(4, 9.0), np.full(4, 18.0)], [9.0, 18.0]) == pytest.approx(
        np.log(2.0) + (18.0 - 9.0) / 13.5)  # pooled windows 9 x4, 18 x4: IQR 9, median 13.5
    # the refinement moved a hedged 13 to 9: |ln(9 / 13)|; windows all 13
    assert rate_doubt([9.0], [np.full(6, 13.0)], [13.0]) == pytest.approx(np.log(13.0 / 9.0))
    # windows spread: 10, 10, 12, 14, 14 -> IQR 4 over median 12
    assert rate_doubt([12.0], [np.array([10.0, 10.0, 12.0, 14.0, 14.0])], [12.0]) == pytest.approx(4.0 / 12.0)


def test_half_and_double_slips_score_alike():
    """Log units: a member at half the others' rate counts as much as one at double."""
    half = rate_doubt([9.0, 18.0, 18.0], [np.full(3, 18.0)] * 3, [9.0, 18.0, 18.0])
    double = rate_doubt([36.0, 18.0, 18.0], [np.full(3, 18.0)] * 3, [36.0, 18.0, 18.0])
    assert half == pytest.approx(double) == pytest.approx(np.log(2.0))


def test_rates_of_no_breathing_are_floored_not_infinite():
    assert np.isfinite(rate_doubt([0.0, 12.0], [np.zeros(3), np.full(3, 12.0)], [0.0, 12.0]))


def test_mismatched_members_are_refused():
    with pytest.raises(ValueError, match="one rate"):
        rate_doubt([12.0, 9.0], [np.full(3, 12.0)], [12.0, 9.0])
    with pytest.raises(ValueError, match="at least one"):
        rate_doubt([], [], [])


def test_threshold_is_the_validation_quantile():
    scores = np.arange(10, dtype=float)  # 0..9
    assert doubt_threshold(scores, 0.9) == pytest.approx(8.1)
    assert doubt_threshold(scores, 1.0) == 9.0
    assert sum(s > doubt_threshold(scores, 0.9) for s in scores) == 1
    with pytest.raises(ValueError, match="coverage"):
        doubt_threshold(scores, 0.0)
    with pytest.raises(ValueError, match="no validation"):
        doubt_threshold([], 0.9)


def test_split_by_doubt_scores_the_confident_and_the_flagged_apart():
    out = split_by_doubt([10.0, 12.0, 9.0, 8.0], [10.0, 12.0, 18.0, 8.0], [False, False, True, False])
    assert out["n_flagged"] == 1 and out["fraction"] == 0.25
    assert out["confident"]["mae"] == 0.0 and out["confident"]["n"] == 3
    assert out["flagged"]["mae"] == 9.0
    assert split_by_doubt([10.0], [10.0], [False])["flagged"] is None
