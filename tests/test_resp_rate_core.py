"""Respiratory rate: metrics, losses, generator, SNR mixing, DSP estimator, features, models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pulmo.data.adapters.synthetic_breath import BREATH_CLASSES, breath_class, synth_breath
from pulmo.data.transforms.audio import NOISE_TYPES, make_noise, mix_at_snr, snr_db
from pulmo.features import create_features
from pulmo.losses.ccc import ccc_cost, ccc_loss, ccc_torch
from pulmo.losses.focal import focal_loss
from pulmo.losses.multitask import DynamicWeightAverage, convex_mixture
from pulmo.metrics.regression import ccc, f1_scores, mse_by_range, pearson, regression_report
from pulmo.models import create_model
from pulmo.resp_rate.dsp import (DspConfig, band_envelopes, envelope_periodicity, estimate_rate_dsp, refine_rate,
                                 three_halves_check)


def test_ccc_hand_values():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(-x, x) == pytest.approx(-1.0 * 2 * 1.25 / (1.25 + 1.25 + 25.0))  # anti-correlated, means -2.5 vs 2.5
    # offset by 1: cov 1.25, variances 1.25 each, mean gap 1 -> 2.5 / 3.5
    assert ccc(x + 1, x) == pytest.approx(2.5 / 3.5)
    # scaled by 2 around the mean: cov 2.5, var 5 and 1.25, same mean -> 5 / 6.25
    assert ccc(2 * (x - 2.5) + 2.5, x) == pytest.approx(5 / 6.25)
    assert pearson(x + 1, x) == pytest.approx(1.0)
    for a, b in [(x, x), (-x, x), (x + 1, x), (x * 2, x)]:
        assert float(ccc_torch(torch.tensor(a), torch.tensor(b))) == pytest.approx(ccc(a, b), abs=1e-6)
    assert float(ccc_loss(torch.tensor(x), torch.tensor(x))) == pytest.approx(0.0, abs=1e-6)
    assert float(ccc_loss(torch.tensor(-x + 5), torch.tensor(x))) == pytest.approx(2.0, abs=1e-6)  # exact mirror


def test_ccc_cost_mixes_rate_and_count_by_alpha():
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    cost = ccc_cost(t, t, t + 1, t, alpha=0.25)
    assert float(cost) == pytest.approx(0.75 * (1 - 2.5 / 3.5), abs=1e-6)


def test_regression_report_and_ranges():
    rep = regression_report([10, 12, 20], [11, 12, 18])
    assert rep["mae"] == pytest.approx(1.0) and rep["mse"] == pytest.approx(5 / 3) and rep["n"] == 3
    assert rep["bias"] == pytest.approx(1 / 3)
    r = mse_by_range([10, 20, 30], [12, 20, 26])
    assert r == {"below_15": 4.0, "15_to_25": 0.0, "above_25": 16.0}
    f = f1_scores([0, 1, 1, 2], [0, 1, 2, 2], 3)
    assert f["f1_0"] == 1.0 and f["f1_1"] == pytest.approx(2 / 3) and f["f1_2"] == pytest.approx(2 / 3)


def test_dwa_weights_sum_to_task_count_and_follow_loss_ratios():
    dwa = DynamicWeightAverage(4, temperature=2.0)
    assert dwa.weights().tolist() == [1.0] * 4
    dwa.end_epoch([1.0, 1.0, 1.0, 1.0])
    assert dwa.weights().sum() == pytest.approx(4.0)
    dwa.end_epoch([0.5, 1.0, 2.0, 1.0])  # ratios 0.5, 1, 2, 1
    w = dwa.weights()
    e = np.exp(np.array([0.5, 1.0, 2.0, 1.0]) / 2.0)
    np.testing.assert_allclose(w, 4 * e / e.sum())
    assert w.sum() == pytest.approx(4.0) and w[2] > w[1] > w[0]
    np.testing.assert_allclose(convex_mixture([0.6, 0.15, 0.1]), [0.6, 0.15, 0.1, 0.15])
    with pytest.raises(ValueError):
        convex_mixture([0.6, 0.5, 0.1])


def test_focal_loss_reduces_to_ce_at_gamma_zero():
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    torch.testing.assert_close(focal_loss(logits, y, 0.0), torch.nn.functional.cross_entropy(logits, y))
    assert focal_loss(logits, y, 2.0) < focal_loss(logits, y, 0.0)


@pytest.mark.parametrize("kind", sorted(NOISE_TYPES))
@pytest.mark.parametrize("target", [10.0, 25.0, 37.5])
def test_snr_mixing_hits_target(kind, target):
    rng = np.random.default_rng(1)
    clean = synth_breath(8.0, 15, 2000, rng).audio
    noise = make_noise(kind, len(clean), 2000, rng)
    mixed = mix_at_snr(clean, noise, target)
    assert abs(snr_db(clean, mixed - clean) - target) < 0.1


@pytest.mark.parametrize("rate", [6.0, 12.0, 20.0, 35.0, 50.0])
def test_generator_rate_is_recovered_by_dsp_on_clean_audio(rate):
    clip = synth_breath(60.0, rate, 2000, np.random.default_rng(int(rate)), irregularity=0.0)
    assert clip.breath_count == pytest.approx(rate)
    # a regular rhythm places one onset per period
    assert np.diff(clip.onsets_s) == pytest.approx(np.full(len(clip.onsets_s) - 1, 60 / rate), abs=2e-3)
    assert estimate_rate_dsp(clip.audio, 2000) == pytest.approx(rate, rel=0.04)
    jittered = synth_breath(60.0, rate, 2000, np.random.default_rng(7), irregularity=0.1)
    assert estimate_rate_dsp(jittered.audio, 2000) == pytest.approx(rate, rel=0.08)


def test_generator_classes_and_noise_flag():
    assert [BREATH_CLASSES[breath_class(r)] for r in (0, 12, 29.9, 31)] == ["none", "normal", "normal", "heavy"]
    quiet = synth_breath(5.0, 0.0, 2000, np.random.default_rng(0))
    assert quiet.onsets_s == [] and np.abs(quiet.audio).max() > 0
    noisy = synth_breath(5.0, 20.0, 2000, np.random.default_rng(0), snr_db=12.0, noise_type="babble")
    assert noisy.noisy and noisy.noise_type == "babble"
    assert not synth_breath(5.0, 20.0, 2000, np.random.default_rng(0), snr_db=35.0, noise_type="fan").noisy
    with pytest.raises(ValueError):
        synth_breath(5.0, 75.0, 2000)


def test_noise_bands_of_real_recordings_hit_their_snr_and_keep_the_label():
    from pulmo.resp_rate.evaluate import SNR_BANDS, LabelledAudio, with_noise_bands

    breath = synth_breath(20.0, 12.0, 2000, np.random.default_rng(1)).audio
    items = [LabelledAudio("a", breath, 12.0, False, "dev1"), LabelledAudio("b", breath[::-1].copy(), 18.0, True, "dev2")]
    copies = with_noise_bands(items, 2000, seed=3)
    assert [c.group for c in copies] == list(SNR_BANDS) * 2 and [c.rate_bpm for c in copies] == [12.0] * 5 + [18.0] * 5
    assert copies[0].samples is breath and copies[5].noisy  # clean copies as they were, with their own flag
    for c in copies:
        band = SNR_BANDS[c.group]
        if band is not None:
            original = breath if c.key.startswith("a@") else items[1].samples
            assert band[0] - 0.1 <= snr_db(original, c.samples - original) <= band[1] + 0.1
            assert c.noisy == (snr_db(original, c.samples - original) < 20.0) and c.samples.dtype == original.dtype
    again = with_noise_bands(items, 2000, seed=3)
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(copies, again))  # seeded


def test_mfb_caps_fmax_at_nyquist_and_round_trips():
    fx = create_features("mfb", sample_rate_hz=2000)
    assert fx.config.fmax_hz == 7500.0 and fx.config.effective_fmax_hz == 1000.0
    same = create_features(fx.name, **fx.config_dict())
    x = torch.randn(2, 2000 * 5)
    out = fx(x)
    assert out.shape == (2, 1, 40, 101)  # 20 frames per second, centred
    torch.testing.assert_close(out, same(x))
    assert create_features("mfb", sample_rate_hz=16000).config.effective_fmax_hz == 7500.0


@pytest.mark.parametrize("variant", ["lstm", "tc_lstm"])
@pytest.mark.parametrize("hidden", [16, 32, 64])
def test_rr_lstm_forward_backward_every_variant(variant, hidden):
    torch.manual_seed(0)
    model = create_model("rr_lstm", variant=variant, hidden=hidden, embed=hidden)
    x = torch.randn(3, 1, 40, 57)
    out = model(x)
    assert out["rate"].shape == (3,) and out["count"].shape == (3,)
    assert out["breath_logits"].shape == (3, 3) and out["noise_logits"].shape == (3, 2)
    assert model.noise_embed[0].out_features == hidden // 4
    sum(v.square().sum() for v in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert (model.time_conv is not None) == (variant == "tc_lstm")
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(1, 1, 20, 10))


def test_refine_rate_snaps_a_coarse_guess_to_the_spectral_peak():
    clip = synth_breath(60.0, 12.0, 2000, np.random.default_rng(3), irregularity=0.0)
    assert refine_rate(clip.audio, 2000, 10.0, 0.3) == pytest.approx(12.0, abs=0.2)
    assert refine_rate(clip.audio, 2000, 14.0, 0.3) == pytest.approx(12.0, abs=0.2)
    assert refine_rate(clip.audio, 2000, 10.0, 0.0) == 10.0  # off
    assert refine_rate(clip.audio, 2000, 40.0, 0.05) == 40.0  # no peak within 5 %: the guess stands


def test_envelope_periodicity_hand_values():
    t = np.arange(300)
    env = np.stack([np.cos(2 * np.pi * t / 20), np.cos(2 * np.pi * t / 20 + 1.0)])  # period 20 frames = 2 s at 10 Hz
    assert envelope_periodicity(env, 30.0) == pytest.approx(1.0, abs=0.01)  # one breath = 20 frames
    assert envelope_periodicity(env, 60.0) == pytest.approx(-1.0, abs=0.01)  # half a period
    lag = 13  # whole-frame lag: the plain normalised correlation, averaged over bands
    a, b = env[:, :-lag], env[:, lag:]
    hand = np.mean([np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)) for x, y in zip(a, b)])
    assert envelope_periodicity(env, 600.0 / lag) == pytest.approx(hand, abs=1e-9)
    assert np.isnan(envelope_periodicity(env, 0.5))  # a lag longer than the envelope


def test_band_envelopes_keep_bands_below_nyquist():
    clip = synth_breath(20.0, 12.0, 2000, np.random.default_rng(0))
    env = band_envelopes(clip.audio, 2000)
    assert env.shape == (4, 200) and np.allclose(env.std(1), 1.0)
    assert band_envelopes(clip.audio[::2], 1000).shape[0] == 2  # bands from 400 Hz up start at or above 0.4 x 1000 Hz
    with pytest.raises(ValueError, match="no envelope band"):
        band_envelopes(clip.audio, 2000, bands=((900.0, 990.0),))


@pytest.mark.parametrize("rate", [8.0, 12.0, 18.0, 20.0])
def test_three_halves_check_recovers_the_rate_from_two_thirds_of_it(rate):
    clip = synth_breath(60.0, rate, 2000, np.random.default_rng(1), irregularity=0.0)
    assert three_halves_check(clip.audio, 2000, rate * 2 / 3) == pytest.approx(rate, rel=0.02)
    assert three_halves_check(clip.audio, 2000, rate) == rate  # the right rate stays
    assert three_halves_check(clip.audio, 2000, rate * 2 / 3, max_bpm=rate * 0.9) == rate * 2 / 3  # above the cap: no move


@pytest.mark.parametrize("method", ["harmonic_sum", "autocorrelation", "spectral_peak"])
def test_dsp_methods_on_clean_audio(method):
    clip = synth_breath(60.0, 25.0, 2000, np.random.default_rng(4), irregularity=0.0)
    assert estimate_rate_dsp(clip.audio, 2000, DspConfig(method=method)) == pytest.approx(25.0, rel=0.05)


def test_every_resp_rate_experiment_loads_and_table_rows_carry_the_paper():
    from pathlib import Path

    from pulmo.errors import ConfigError
    from pulmo.resp_rate.config import load_rr_config

    files = sorted((Path(__file__).resolve().parents[1] / "configs/experiments/resp-rate").glob("*.yaml"))
    assert len(files) >= 8
    for f in files:
        cfg = load_rr_config(f)
        assert cfg.task == "resp-rate" and cfg.model.name == "rr_lstm"
        if f.name.startswith("table"):
            assert cfg.paper, f"{f} must carry the paper's expected values"
    with pytest.raises(ConfigError, match="unknown key"):
        load_rr_config(files[0], {"train": {"epoch": 3}})
