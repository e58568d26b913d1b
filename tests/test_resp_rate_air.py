"""Air-microphone breathing: the simulator's ground truth, band envelopes at 2-48 kHz, the
air-band DSP, the pipeline's front end, and no rate for digital silence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pulmo.data.adapters.synthetic_air import AirSettings, draw_settings, noise_gate, synth_air
from pulmo.errors import DataError
from pulmo.features import create_features
from pulmo.features.band_envelope import BandEnvelopeConfig
from pulmo.resp_rate.air import estimate_rate_air, front_end, high_band_share


def burst_onsets(audio: np.ndarray, sr: int, min_gap_s: float) -> list[float]:
    """Onsets (s) of loud bursts: 50 ms RMS crossing 30 % of its maximum upwards, at least
    ``min_gap_s`` apart."""
    frame = int(0.05 * sr)
    k = len(audio) // frame
    rms = np.sqrt((audio[: k * frame].astype(float).reshape(k, frame) ** 2).mean(1))
    rms = np.convolve(rms, np.ones(4) / 4, "same")
    up = np.flatnonzero((rms[1:] >= 0.3 * rms.max()) & (rms[:-1] < 0.3 * rms.max())) + 1
    out: list[float] = []
    for i in up:
        if not out or i * 0.05 - out[-1] >= min_gap_s:
            out.append(i * 0.05)
    return out


def test_simulated_12_bpm_clip_has_12_breaths_per_minute_by_onset_count():
    s = AirSettings(sample_rate_hz=16000, exhale_gain_db=12.0, pause_fraction=0.2, irregularity=0.05)
    clip = synth_air(60.0, 12.0, s, np.random.default_rng(0))
    assert len(clip.audio) == 60 * 16000 and clip.rate_bpm == 12.0
    assert abs(len(clip.exhale_onsets_s) - 12) <= 1 and abs(len(clip.inhale_onsets_s) - 12) <= 1
    detected = burst_onsets(clip.audio, 16000, min_gap_s=2.5)  # one burst (the exhalation) per 5 s breath
    assert abs(len(detected) - 12) <= 1
    # each detected burst starts near a placed exhalation onset
    assert all(min(abs(d - e) for e in clip.exhale_onsets_s) < 1.0 for d in detected)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 48000])
def test_simulator_sample_rates_band_limits_and_gate(rate):
    rng = np.random.default_rng(1)
    s = draw_settings(rng, "test" if rate in (11025, 22050) else "train", 40.0)
    s.sample_rate_hz, s.gate_db, s.codec_cutoff_hz = rate, -30.0, 7000.0
    clip = synth_air(10.0, 40.0, s, rng)
    assert clip.audio.dtype == np.float32 and len(clip.audio) == 10 * rate and np.isfinite(clip.audio).all()
    assert np.mean(clip.audio == 0) > 0.05  # the gate leaves digital zeros between breaths
    with pytest.raises(ValueError):
        synth_air(5.0, 12.0, AirSettings(sample_rate_hz=4000))


def test_noise_gate_zeroes_quiet_frames():
    x = np.concatenate([np.ones(1600), 1e-4 * np.ones(16000), np.ones(1600)])
    y = noise_gate(x, 16000, -30.0)
    assert (y[5000:12000] == 0).all() and (y[:1000] == 1).all()


@pytest.mark.parametrize("rate", [2000, 4000, 8000, 16000, 44100, 48000])
def test_band_envelopes_accept_2_to_48_khz(rate):
    fx = create_features("band_env", sample_rate_hz=rate)
    same = create_features(fx.name, **fx.config_dict())
    x = torch.randn(2, 3 * rate)
    out = fx(x)
    assert out.shape == (2, 1, 8, 31) and torch.isfinite(out).all()
    assert torch.equal(out, same(x))
    edges = BandEnvelopeConfig(sample_rate_hz=rate).edges_hz()
    assert edges[0] == 100 and edges[-1] <= 0.45 * rate + 1e-6


def test_air_dsp_reads_rate_at_several_sample_rates():
    for rate_hz, bpm in ((8000, 10.0), (16000, 24.0), (44100, 45.0)):
        s = AirSettings(sample_rate_hz=rate_hz, route="mouth" if bpm > 30 else "nasal", noise="fan", snr_db=20.0,
                        pause_fraction=0.0 if bpm > 30 else 0.15)
        clip = synth_air(40.0, bpm, s, np.random.default_rng(2))
        est = estimate_rate_air(clip.audio, rate_hz)
        assert abs(est.rate_bpm - bpm) < 1.0 and len(est.window_rates_bpm) >= 2


def test_front_end_tells_air_from_resampled_stethoscope():
    import soxr

    clip = synth_air(20.0, 15.0, AirSettings(sample_rate_hz=16000), np.random.default_rng(3))
    assert front_end(clip.audio, 16000, 16000)[0] == "air"
    steth = soxr.resample(soxr.resample(clip.audio, 16000, 2000), 2000, 16000)  # 2 kHz audio stored at 16 kHz
    assert front_end(steth, 16000, 16000)[0] == "stethoscope"
    assert front_end(clip.audio, 16000, 4000)[0] == "stethoscope"  # recorded below 8 kHz: stethoscope models
    assert high_band_share(np.zeros(100), 2000) == 0.0


@pytest.fixture(scope="module")
def pipe():
    from pulmo.inference.resp_rate import RespRatePipeline

    return RespRatePipeline()


def test_pipeline_air_recording_gets_air_rate_interval_and_members(pipe, tmp_path: Path):
    s = AirSettings(sample_rate_hz=16000, noise="babble", snr_db=15.0)
    clip = synth_air(40.0, 18.0, s, np.random.default_rng(4))
    path = tmp_path / "breath.flac"
    sf.write(path, clip.audio, 16000)
    track = pipe.analyze_file(path)
    assert track.front_end == "air" and track.rate_source == pipe.air_rule == "air_networks"  # the bundled rule
    assert abs(track.rate_bpm - 18.0) < 1.0 and round(track.rate_bpm, 1) == track.rate_bpm
    lo, hi = track.rate_interval_bpm
    assert lo <= track.rate_bpm <= hi
    assert {"networks", "dsp_stethoscope_band", "dsp_air_band", "air_networks"} <= set(track.members)
    assert track.rate_bpm == round(track.members["air_networks"], 1)


def test_air_networks_are_doubted_where_they_disagree_with_the_air_band():
    from pulmo.resp_rate.air import NETWORKS_DOUBT_ABOVE, air_uncertain, networks_doubt

    assert networks_doubt(18.0, 18.0) == 0.0
    assert networks_doubt(36.0, 18.0) == pytest.approx(np.log(2)) == networks_doubt(18.0, 36.0)
    estimate = None  # the air-band DSP's own doubt is not used for the air_networks rule
    agree = {"air_networks": 18.0, "dsp_air_band": 17.0}
    half = {"air_networks": 9.0, "dsp_air_band": 18.0}  # a half-rate slip: ln 2 = 0.69 > 0.459
    assert not air_uncertain("air_networks", agree, estimate, 18.0)
    assert air_uncertain("air_networks", half, estimate, 18.0)
    assert networks_doubt(18.0, 17.0) < NETWORKS_DOUBT_ABOVE < networks_doubt(9.0, 18.0)


def test_pipeline_never_returns_a_rate_for_digital_silence(pipe, tmp_path: Path):
    path = tmp_path / "silence.flac"
    sf.write(path, np.zeros(16000 * 20, np.float32), 16000)
    with pytest.raises(DataError, match="silent"):
        pipe.analyze_file(path)
    with pytest.raises(DataError, match="silent"):  # samples handed in directly, past the loader
        pipe.analyze_file(tmp_path / "given.wav", np.zeros(2000 * 20, np.float32))
    with pytest.raises(DataError, match="silent"):
        pipe.estimate(tmp_path / "given.wav", np.zeros(2000 * 20, np.float32))


def test_evaluate_scores_a_folder_of_air_recordings(tmp_path: Path, capsys):
    """``pulmo evaluate --task resp-rate --data DIR --json`` on FLAC at 16 kHz with a
    ``labels.csv`` of path,bpm only (the nose-microphone check's layout)."""
    import json

    from pulmo.cli import main

    rng = np.random.default_rng(5)
    lines = ["path,bpm"]
    for i, bpm in enumerate((9.0, 16.0, 23.0)):
        clip = synth_air(30.0, bpm, AirSettings(sample_rate_hz=16000, route="nasal", noise="fan", snr_db=20.0), rng)
        sf.write(tmp_path / f"take{i}.flac", clip.audio, 16000)
        lines.append(f"take{i}.flac,{bpm:g}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    assert main(["evaluate", "--task", "resp-rate", "--data", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3 and report["front_end"] == {"air": 3} and report["mae"] < 1.0
    assert len(report["model_line"]) < 160
    assert main(["evaluate", "--task", "resp-rate", "--data", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "front end per recording: air 3" in text and max(len(line) for line in text.splitlines()) < 300
    assert text.startswith("resp-rate model: vote of five LSTM composites (resp_rate_composite.pt")
    assert "push_" not in text  # the names of the experiments behind the model stay in the JSON's provenance
    assert "scoring" in captured.err and "3/3" in captured.err  # a progress bar on stderr, not in the JSON


@pytest.mark.parametrize("rate_hz,route", [(44100, "mouth"), (16000, "nasal")])
def test_analyze_gives_a_rate_for_air_breathing(tmp_path: Path, rate_hz: int, route: str):
    """``pulmo analyze breath.wav`` (the front door, routed by content) on a 16 or 44.1 kHz
    breathing recording gives the air front end's rate."""
    from pulmo.frontdoor.capabilities import analyze_path

    clip = synth_air(40.0, 20.0, AirSettings(sample_rate_hz=rate_hz, route=route, noise="fan", snr_db=20.0),
                     np.random.default_rng(0))
    path = tmp_path / "breath.wav"
    sf.write(path, clip.audio, rate_hz)
    result, _ = analyze_path(path)
    rate = result if result["task"] == "resp-rate" else next(a for a in result["also"] if a["task"] == "resp-rate")
    assert rate["front_end"] == "air" and abs(rate["rate_bpm"] - 20.0) < 1.0
    assert "breaths/min" in rate["headline"] and "air microphone: rate from networks trained for air audio" in rate["headline"]
