"""Rate as a distribution: soft-label cross-entropy over log-spaced rate bins.

A regression head trained with the CCC loss answers an ambiguous window (inhalation and
exhalation alike, so the period may be one breath or half of one) with the mean of the two
octaves, a rate no breathing has. A softmax over rate bins can keep both: its target for a
clip of rate ``r`` is a Gaussian in log-rate around ``r`` (``sigma`` in natural-log units,
0.05 ~ 5 %), so neighbouring bins share the credit and an octave stays a separate mode.
"""

from __future__ import annotations

import torch


def rate_bin_centres(n_bins: int, low_bpm: float, high_bpm: float) -> torch.Tensor:
    """``(n_bins,)`` bin centres (bpm), log-spaced from ``low_bpm`` to ``high_bpm``."""
    if n_bins < 2 or not 0 < low_bpm < high_bpm:
        raise ValueError(f"need at least 2 bins and 0 < low < high, got {n_bins}, {low_bpm}, {high_bpm}")
    return torch.logspace(torch.log10(torch.tensor(low_bpm)), torch.log10(torch.tensor(high_bpm)), n_bins)


def soft_rate_targets(rate_bpm: torch.Tensor, centres_bpm: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(B,)`` rates -> ``(B, K)`` targets: a Gaussian in log-rate around each rate over the
    bins, normalised to sum to 1. Rates below 0.5 bpm (no breathing) count as 0.5."""
    d = torch.log(centres_bpm)[None, :] - torch.log(rate_bpm.clamp(min=0.5))[:, None]
    return torch.softmax(-0.5 * (d / sigma) ** 2, dim=1)


def rate_bin_loss(logits: torch.Tensor, rate_bpm: torch.Tensor, centres_bpm: torch.Tensor, sigma: float) -> torch.Tensor:
    """Mean over the batch of the cross-entropy of ``(B, K)`` logits against
    :func:`soft_rate_targets`."""
    soft = soft_rate_targets(rate_bpm, centres_bpm, sigma)
    return -(soft * logits.float().log_softmax(1)).sum(1).mean()
