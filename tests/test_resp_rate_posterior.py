"""The rate-bin head and the posterior-spectrum recording rate: soft targets, loss, model
head, pulmo.resp_rate.dsp.posterior_rate, and how windows, gates and votes carry the
distributions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pulmo.data.adapters.synthetic_breath import synth_breath
from pulmo.losses.rate_bins import rate_bin_centres, rate_bin_loss, soft_rate_targets
from pulmo.models import create_model
from pulmo.resp_rate.config import ClipConfig
from pulmo.resp_rate.dsp import posterior_rate
from pulmo.resp_rate.net import RateDistribution, WindowPredictions, mean_rate_distribution, recording_distribution, recording_rate
from pulmo.resp_rate.predictor import (RecordingPrediction, VotePredictor, gate_windows, mean_ignoring_nan,
                                       pooled_distribution, predict_with_own_clip, vote_rate, vote_windows)

BINS = rate_bin_centres(48, 3.0, 60.0)


def test_bin_centres_are_log_spaced():
    c = rate_bin_centres(5, 2.0, 32.0)
    np.testing.assert_allclose(c.numpy(), [2.0, 4.0, 8.0, 16.0, 32.0], rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2 bins"):
        rate_bin_centres(1, 2.0, 32.0)


def test_soft_targets_sum_to_one_peak_at_the_rate_and_are_symmetric_in_log_rate():
    c = rate_bin_centres(5, 2.0, 32.0)
    t = soft_rate_targets(torch.tensor([8.0, 0.0]), c, sigma=0.5)
    np.testing.assert_allclose(t.sum(1).numpy(), [1.0, 1.0], rtol=1e-6)
    assert int(t[0].argmax()) == 2 and t[0, 1] == pytest.approx(float(t[0, 3]))  # 4 and 16 lie one octave either side
    w = torch.exp(-0.5 * (np.log(2.0) / 0.5) ** 2 * torch.tensor([4.0, 1.0, 0.0, 1.0, 4.0]))
    np.testing.assert_allclose(t[0].numpy(), (w / w.sum()).numpy(), rtol=1e-5)  # the Gaussian by hand
    assert int(t[1].argmax()) == 0  # no breathing counts as 0.5 bpm: the lowest bin


def test_rate_bin_loss_is_cross_entropy_and_tends_to_it_with_hard_targets():
    logits = torch.randn(4, 48)
    rates = torch.tensor([8.0, 12.0, 18.0, 20.0])
    nearest = (torch.log(BINS)[None] - torch.log(rates)[:, None]).abs().argmin(1)
    assert rate_bin_loss(logits, rates, BINS, sigma=1e-3).item() == pytest.approx(F.cross_entropy(logits, nearest).item(), rel=1e-5)
    soft = soft_rate_targets(rates, BINS, 0.05)
    # the minimum over logits is at log(targets): the loss is then the targets' entropy
    entropy = -(soft * soft.clamp_min(1e-30).log()).sum(1).mean()
    assert rate_bin_loss(soft.clamp_min(1e-30).log(), rates, BINS, 0.05).item() == pytest.approx(entropy.item(), rel=1e-4)
    assert rate_bin_loss(logits, rates, BINS, 0.05).item() > entropy.item()


def test_rr_lstm_rate_bin_head():
    torch.manual_seed(0)
    model = create_model("rr_lstm", hidden=16, embed=16, rate_bins=48)
    out = model(torch.randn(2, 1, 40, 30))
    assert out["rate_bin_logits"].shape == (2, 48) and model.rate_bin_bpm.shape == (48,)
    rate_bin_loss(out["rate_bin_logits"], torch.tensor([9.0, 18.0]), model.rate_bin_bpm, 0.05).backward()
    assert model.rate_bin_head.weight.grad is not None
    assert not any("rate_bin_bpm" in k for k in model.state_dict())  # derived from the arguments, not saved
    plain = create_model("rr_lstm", hidden=16, embed=16)
    assert "rate_bin_logits" not in plain(torch.randn(1, 1, 40, 30)) and plain.rate_bin_head is None


def _peaked(rate_bpm: float, sigma: float = 0.05) -> np.ndarray:
    """A rate distribution over BINS: a Gaussian in log-rate around ``rate_bpm``."""
    p = np.exp(-0.5 * ((np.log(BINS.numpy()) - np.log(rate_bpm)) / sigma) ** 2)
    return p / p.sum()


def test_posterior_rate_takes_the_octave_the_distribution_says_and_the_precision_of_the_spectrum():
    """18 bpm breathing whose envelope spectrum peaks at 18 and at its sub-harmonic 9: a
    distribution leaning to ~17 gets the 18 peak exactly; one leaning to ~9.5 gets the 9 peak."""
    clip = synth_breath(60.0, 18.0, 2000, np.random.default_rng(3), irregularity=0.0)
    assert posterior_rate(clip.audio, 2000, _peaked(17.0), BINS.numpy(), 1.0) == pytest.approx(18.0, abs=0.3)
    assert posterior_rate(clip.audio, 2000, _peaked(9.5), BINS.numpy(), 1.0) == pytest.approx(9.0, abs=0.3)
    # a flat distribution leaves the choice to the spectrum: its strongest peak in range
    flat = np.full(48, 1 / 48)
    assert posterior_rate(clip.audio, 2000, flat, BINS.numpy(), 1.0) == pytest.approx(18.0, abs=0.3)


def test_posterior_rate_reaches_heavy_breathing_only_below_its_cap():
    """40 bpm breathing and a distribution that says so: the default cap (30 bpm, for networks
    that never saw heavy breathing) cannot return it; a 60 bpm cap (ClipConfig.posterior_max_bpm)
    does, and recording_rate passes the clip's cap on."""
    clip = synth_breath(60.0, 40.0, 2000, np.random.default_rng(5), irregularity=0.0)
    assert posterior_rate(clip.audio, 2000, _peaked(40.0), BINS.numpy(), 1.0) <= 30.0
    assert posterior_rate(clip.audio, 2000, _peaked(40.0), BINS.numpy(), 1.0, max_bpm=60.0) == pytest.approx(40.0, abs=0.6)
    w = _windows([40.0] * 4, np.tile(_peaked(40.0), (4, 1)))
    cfg = ClipConfig(window_s=15.0, min_s=12.0, max_s=15.0, posterior_weight=1.0)
    assert recording_rate(clip.audio, w, cfg) <= 30.0
    assert recording_rate(clip.audio, w, replace(cfg, posterior_max_bpm=60.0)) == pytest.approx(40.0, abs=0.6)


def _windows(rates: list[float], probs: np.ndarray | None, classes: list[int] | None = None) -> WindowPredictions:
    n = len(rates)
    breath = np.zeros((n, 3))
    breath[np.arange(n), classes or [1] * n] = 1.0
    return WindowPredictions(np.arange(n, dtype=float), 15.0, np.array(rates), np.array(rates) / 4, breath,
                             np.tile([0.9, 0.1], (n, 1)), probs, None if probs is None else BINS.numpy())


def test_recording_rate_uses_the_distribution_only_when_asked_and_when_most_windows_have_one():
    clip = synth_breath(60.0, 18.0, 2000, np.random.default_rng(3), irregularity=0.0)
    probs = np.tile(_peaked(9.5), (4, 1))
    w = _windows([13.0] * 4, probs)  # hedged regression, distribution on the lower octave
    cfg = ClipConfig(window_s=15.0, min_s=12.0, max_s=15.0)
    assert recording_rate(clip.audio, w, cfg) == pytest.approx(13.0)  # the plain median
    assert recording_rate(clip.audio, w, replace(cfg, posterior_weight=1.0)) == pytest.approx(9.0, abs=0.3)
    nan_rows = probs.copy()
    nan_rows[:3] = np.nan  # three of four windows came from another network
    w_gated = _windows([13.0] * 4, nan_rows)
    assert mean_rate_distribution(w_gated) is None
    assert recording_rate(clip.audio, w_gated, replace(cfg, posterior_weight=1.0)) == pytest.approx(13.0)
    assert recording_rate(clip.audio, _windows([13.0] * 4, None), replace(cfg, posterior_weight=1.0)) == pytest.approx(13.0)


def test_no_breathing_is_not_fitted_to_a_spectrum_peak():
    """A recording whose windows are mostly classed none reads about 0 from the window rates:
    a distribution fit could only return a spectrum peak (a breathing rate); nor does such a
    recording lend a distribution to a vote's pool."""
    noise = np.random.default_rng(0).standard_normal(2000 * 60).astype(np.float32) * 0.1
    probs = np.tile(_peaked(3.0), (4, 1))  # no breathing: the lowest bin
    cfg = ClipConfig(window_s=15.0, min_s=12.0, max_s=15.0, posterior_weight=1.0)
    silent = _windows([0.2, -0.1, 0.1, 0.3], probs, classes=[0, 0, 0, 1])
    assert recording_rate(noise, silent, cfg) == pytest.approx(0.15)
    assert recording_distribution(silent, cfg) is None
    breathing = _windows([0.2, -0.1, 0.1, 0.3], probs, classes=[0, 0, 1, 1])  # half: not most
    assert recording_distribution(breathing, cfg) is not None and recording_rate(noise, breathing, cfg) >= 4.0


def test_gate_and_vote_carry_the_rate_distributions():
    probs = np.tile(_peaked(12.0), (3, 1))
    rate = _windows([12.0, 12.0, 12.0], probs)
    breathing = _windows([12.0, 40.0, 12.0], None, classes=[1, 2, 1])  # the middle window is heavy
    gated = gate_windows(rate, breathing, None)
    assert np.isnan(gated.rate_probs[1]).all() and np.allclose(gated.rate_probs[[0, 2]], probs[[0, 2]])
    voted = vote_windows([gated, rate])
    np.testing.assert_allclose(voted.rate_probs, probs)  # the NaN row takes the other member's distribution
    assert vote_windows([gated, breathing]).rate_probs is None  # a member without distributions: none
    np.testing.assert_allclose(mean_ignoring_nan([np.array([1.0, np.nan, np.nan]), np.array([3.0, 2.0, np.nan])]),
                               [2.0, 2.0, np.nan])


@dataclass
class _FittingMember:
    """A stand-in network member: four windows with one rate distribution each, and the
    recording rate its clip config fits to them."""

    probs: np.ndarray
    clip: ClipConfig = field(default_factory=lambda: ClipConfig(window_s=15.0, min_s=12.0, max_s=15.0, posterior_weight=1.0))

    def windows(self, samples: np.ndarray) -> WindowPredictions:
        return _windows([13.0] * 4, np.tile(self.probs, (4, 1)))

    def predict(self, samples: np.ndarray) -> RecordingPrediction:
        return predict_with_own_clip(self, samples)


def test_a_vote_of_distribution_networks_pools_them_so_one_sure_member_outweighs_two_unsure_ones():
    """18 bpm breathing (envelope spectrum peaks at 18 and 9). One member is sure of ~18; two
    lean 4:1 to ~9. Each unsure member alone fits 9 and their median would be 9; the pooled
    distribution (mean) puts more mass near 18 than near 9, and its fit is 18."""
    from pulmo.inference.resp_rate import aggregate_description

    clip = synth_breath(60.0, 18.0, 2000, np.random.default_rng(3), irregularity=0.0)
    sure, unsure = _peaked(17.0, 0.05), 0.8 * _peaked(9.5, 0.3) + 0.2 * _peaked(17.0, 0.3)
    members = [_FittingMember(sure), _FittingMember(unsure), _FittingMember(unsure)]
    preds = [m.predict(clip.audio) for m in members]
    assert [p.rate_bpm for p in preds] == pytest.approx([18.0, 9.0, 9.0], abs=0.3)
    assert all(p.distribution is not None and p.distribution.weight == 1.0 for p in preds)
    vote = VotePredictor(members)
    pred = vote.predict(clip.audio)
    assert pred.rate_bpm == pytest.approx(18.0, abs=0.3)
    np.testing.assert_allclose(pred.distribution.probs, (sure + 2 * unsure) / 3)
    assert aggregate_description(vote).startswith("the envelope-spectrum peak that best fits the pooled rate distributions of 3")
    # a member whose validation chose the refinement over a fit still lends its distribution to the pool
    refined = _FittingMember(sure, replace(members[0].clip, posterior_weight=None, refine_tolerance=0.2))
    assert refined.predict(clip.audio).distribution.weight is None
    assert VotePredictor([refined] + members[1:]).predict(clip.audio).rate_bpm == pytest.approx(18.0, abs=0.3)


def test_pooled_distribution_takes_the_median_weight_and_highest_cap_and_needs_every_member_on_one_grid():
    a = RateDistribution(_peaked(10.0, 0.1), BINS.numpy(), 0.5, 30.0)
    b = RateDistribution(_peaked(20.0, 0.1), BINS.numpy(), 4.0, 60.0)
    c = RateDistribution(_peaked(12.0, 0.1), BINS.numpy(), 1.0, 30.0)
    pooled = pooled_distribution([a, b, c])
    assert pooled is not None and pooled.weight == 1.0 and pooled.max_bpm == 60.0
    np.testing.assert_allclose(pooled.probs, (a.probs + b.probs + c.probs) / 3)
    assert pooled_distribution([a, replace(b, weight=None), c]).weight == pytest.approx(0.75)  # the median of those given
    assert pooled_distribution([replace(a, weight=None), replace(c, weight=None)]) is None  # no network chose a weight
    assert pooled_distribution([a, None, c]) is None and pooled_distribution([]) is None
    assert pooled_distribution([a, RateDistribution(a.probs[:-1], a.bins_bpm[:-1], 1.0, 30.0)]) is None
    silent = np.zeros(2000 * 20, np.float32)
    assert vote_rate(silent, 2000, [10.0, 20.0, 11.0], [a, None, c]) == 11.0  # not every member has one: the median
