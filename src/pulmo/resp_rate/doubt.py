"""How far to trust a recording's rate.

The rate models' large errors on real recordings are octave slips: half, double or two
thirds of the true rate, where one breath's inhalation and exhalation sound alike, or only
one of them is audible, and the audio alone leaves the period ambiguous. On such recordings
the network's window rates spread and hedge between the two octaves, the envelope-spectrum
refinement has to move the hedged estimate far to reach a spectral peak, and the seeds of a
vote land on different octaves. :func:`rate_doubt` adds up these three spreads; a model's
threshold on it (``doubt_above`` in its checkpoint, chosen on validation recordings by
``benchmarks/resp_rate_composite.py``) marks a rate as uncertain. It is a flag for a person
to check, not a correction: the flagged rate is still the model's best estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOOR_BPM = 1.0  # windows of no breathing read ~0 bpm; logs need a floor


def rate_doubt(member_rates_bpm: Sequence[float], member_window_rates_bpm: Sequence[np.ndarray],
               member_aggregates_bpm: Sequence[float]) -> float:
    """A recording's doubt score (natural-log units, 0 = none): the sum of

    - the members' disagreement, ``ln(max / min)`` of their recording rates (0 for one model);
    - the post-processing move, the mean over members of ``|ln(rate / aggregate)|``, where
      ``aggregate`` is the member's aggregate of its window rates before the refinement and
      the three-halves check;
    - the window spread, the interquartile range of all members' window rates over their median.

    Args:
        member_rates_bpm: each member's recording rate, ``(M,)``.
        member_window_rates_bpm: each member's window rates, ``M`` arrays of ``(W,)``.
        member_aggregates_bpm: each member's aggregate of its window rates, ``(M,)``.
    Rates are floored at :data:`FLOOR_BPM`.
    """
    if not len(member_rates_bpm) == len(member_window_rates_bpm) == len(member_aggregates_bpm) or not member_rates_bpm:
        raise ValueError("rate_doubt needs one rate, one window-rate array and one aggregate per member (at least one)")
    rates = np.maximum(np.asarray(member_rates_bpm, float), FLOOR_BPM)
    aggregates = np.maximum(np.asarray(member_aggregates_bpm, float), FLOOR_BPM)
    windows = np.maximum(np.concatenate([np.ravel(w) for w in member_window_rates_bpm]).astype(float), FLOOR_BPM)
    q1, median, q3 = np.percentile(windows, [25, 50, 75])
    return float(np.log(rates.max() / rates.min()) + np.mean(np.abs(np.log(rates / aggregates))) + (q3 - q1) / median)


def doubt_threshold(validation_doubts: Sequence[float], coverage: float) -> float:
    """The doubt above which a rate is flagged uncertain: the ``coverage`` quantile of the
    validation recordings' doubt scores (so about ``1 - coverage`` of them are flagged)."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
    if not len(validation_doubts):
        raise ValueError("no validation doubt scores to choose a threshold from")
    return float(np.quantile(np.asarray(validation_doubts, float), coverage))
