"""Each capability through the front door on its bundled model and demo file."""

import re
from pathlib import Path

import pytest

from pulmo.errors import ConfigError
from pulmo.frontdoor.capabilities import analyze_path, capability, capability_names
from pulmo.frontdoor.inputs import InputRejected, Limits, inspect_file
from pulmo.frontdoor.routing import route_file
from tests.frontdoor_fixtures import chest_phantom, image_file
from tests.test_frontdoor import wav

ASSETS = Path(__file__).resolve().parents[1] / "src" / "pulmo" / "assets"


def test_resp_rate_reports_a_track_with_provenance():
    assert "resp-rate" in capability_names()
    result, figures = analyze_path(ASSETS / "demo_breath.flac", task="resp-rate")
    assert result["task"] == "resp-rate" and re.fullmatch(r"[0-9a-f]{64}", result["model"]["sha256"])
    assert "breaths/min" in result["headline"] and result["model"]["evaluation"].startswith("RRuJO test subjects")
    windows = result["windows"]  # always in the JSON; the table a person reads lists the estimators
    assert len(windows) >= 2 and result["table"]["columns"][:2] == ["estimate", "breaths/min"]
    assert [row[2] for row in result["table"]["rows"]].count(True) == 1  # the estimator the result is from
    by_window, _ = analyze_path(ASSETS / "demo_breath.flac", task="resp-rate", options={"windows": True})
    assert len(by_window["table"]["rows"]) == len(by_window["windows"]) == len(windows)  # the per-window table on request
    assert all(w["end_s"] > w["start_s"] for w in windows) and 0 <= result["heavy_fraction"] <= 1
    assert list(figures) == ["rate_track"] and figures["rate_track"].startswith(b"\x89PNG")


def test_resp_rate_short_clip_goes_to_the_short_clip_model(tmp_path):
    """Audio shorter than the default model's shortest clip (12 s) is scored by the bundled
    short-clip model (7 s windows, from 4 s), unless a checkpoint was asked for."""
    import numpy as np
    import soundfile as sf

    from pulmo.data.adapters.synthetic_breath import synth_breath
    from pulmo.errors import AudioTooShortError

    x = synth_breath(6.0, 15.0, 2000, np.random.default_rng(0)).audio
    path = tmp_path / "clip6s.wav"
    sf.write(path, x, 2000)
    result, _ = analyze_path(path, task="resp-rate")
    assert result["model"]["checkpoint"] == "resp_rate_short.pt" and result["model"]["name"] == "resp-rate-short"
    assert "short clips" in result["model"]["recipe"]  # the name it was trained under, kept apart
    assert result["model"]["evaluation"].startswith("RRuJO test subjects, clips of 4-7 s")
    assert [(w["start_s"], w["end_s"]) for w in result["windows"]] == [(0.0, 6.0)]  # one window of the clip's own length
    with pytest.raises(AudioTooShortError, match="resp_rate_short.pt"):
        capability("resp-rate").analyze(path, checkpoint=str(ASSETS / "resp_rate_composite.pt"))
    sf.write(tmp_path / "clip3s.wav", x[:6000], 2000)
    with pytest.raises(InputRejected, match="the breathing rate needs at least 4 s"):
        analyze_path(tmp_path / "clip3s.wav", task="resp-rate")
    with pytest.raises(ConfigError, match="resp-rate takes options"):
        capability("resp-rate").analyze(ASSETS / "demo_breath.flac", options={"annotation": "x.txt"})


def test_lung_sounds_need_4khz_so_slower_recordings_get_the_rate_alone(tmp_path):
    slow = wav(tmp_path / "slow.wav", seconds=8.0, rate=2000)  # above the front door's 1 kHz floor
    info = inspect_file(slow, Limits())
    assert route_file(slow, info).tasks == ("resp-rate",)
    with pytest.raises(InputRejected) as err:
        route_file(slow, info, "lung-sounds")
    assert (err.value.status, err.value.code) == (422, "sample_rate") and "4000 Hz" in str(err.value)
    fast = wav(tmp_path / "fast.wav", seconds=8.0, rate=8000)
    assert route_file(fast, inspect_file(fast, Limits())).tasks == ("lung-sounds", "resp-rate")


def test_a_stethoscope_recording_gets_both_results_in_one_envelope():
    result, figures = analyze_path(ASSETS / "demo_lung_sounds.flac")
    assert result["task"] == "lung-sounds" and result["routing"]["tasks"] == ["lung-sounds", "resp-rate"]
    (rate,) = result["also"]
    assert rate["task"] == "resp-rate" and "breaths/min" in rate["headline"] and rate["model"]["checkpoint"]
    assert [f["name"] for f in rate["figures"]] == ["resp-rate-rate_track"]
    assert set(figures) == {"timeline", "resp-rate-rate_track"}
    # the bundled lung-sound model scored below calling every cycle normal: the answer says so
    from pulmo.inference.lung_sounds import LungSoundPipeline

    score = LungSoundPipeline.from_checkpoint().bundle["metrics"]["test"]["score"]
    flagged = [w for w in result["warnings"] if "no better than calling every cycle normal" in w]
    assert len(flagged) == (score <= 0.5) and rate["warnings"] == []


def test_reliability_warning_only_for_a_model_no_better_than_the_trivial_rule():
    from pulmo.frontdoor import cxr, lung_sounds

    assert "0.47" in lung_sounds.reliability_warnings({"score": 0.471})[0]
    assert lung_sounds.reliability_warnings({"score": 0.5}) and not lung_sounds.reliability_warnings({"score": 0.62})
    assert lung_sounds.reliability_warnings({}) == []  # no stored test score: nothing to say
    # chest X-ray: guessing each of 3 classes in proportion to its frequency scores macro-F1 1/3
    (warning,) = cxr.reliability_warnings({"loso": {"pooled_macro_f1": [0.308, 0.04]}}, 3)
    assert "0.31, no better than guessing in proportion to the classes (0.33)" in warning
    assert cxr.reliability_warnings({"loso": {"pooled_macro_f1": [0.45, 0.04]}}, 3) == []
    assert cxr.reliability_warnings({"val": {"macro_f1": 0.2}}, 3) == []  # no held-out-source figure stored


def test_a_16bit_scan_goes_to_detection_and_comes_back_with_boxes_drawn():
    pytest.importorskip("ultralytics")
    result, figures = analyze_path(ASSETS / "demo_body_scan_16bit.png")  # no task: a 16-bit non-chest scan means detect
    assert result["task"] == "detect" and re.fullmatch(r"[0-9a-f]{64}", result["model"]["sha256"])
    assert result["model"]["evaluation"].startswith("baggage X-ray test split")
    assert len(result["table"]["rows"]) == len(result["detections"]) and result["any_anomaly"] == bool(result["detections"])
    assert "image_png" not in result and "path" not in result
    assert list(figures) == ["boxes"] and figures["boxes"].startswith(b"\x89PNG")


def test_an_8bit_xray_goes_to_cxr_with_gates_and_a_gradcam_overlay(tmp_path):
    chest = image_file(tmp_path / "chest.png", chest_phantom())
    result, figures = analyze_path(chest)  # no task: it passes the chest X-ray gate
    assert result["task"] == "cxr" and re.fullmatch(r"[0-9a-f]{64}", result["model"]["sha256"])
    probs = result["probabilities"]
    assert set(probs) == {"Covid", "Normal", "Viral Pneumonia"} and sum(probs.values()) == pytest.approx(1, abs=1e-3)
    assert result["label"] == max(probs, key=probs.get) and "passed" in result["gates"]
    assert result["model"]["evaluation"]  # how good the model measured, in one sentence (docs/chest-xray.md)
    assert list(figures) == ["gradcam"] and figures["gradcam"].startswith(b"\x89PNG")
    from pulmo.inference.cxr import CxrPipeline

    pooled = CxrPipeline.from_checkpoint().metrics["loso"]["pooled_macro_f1"][0]
    flagged = [w for w in result["warnings"] if "no better than guessing in proportion to the classes" in w]
    assert len(flagged) == (pooled <= 1 / 3)  # the bundled model: 0.31 on held-out sources


def test_loading_the_detector_engine_leaves_pillow_alone(tmp_path):
    pytest.importorskip("ultralytics")
    from PIL import Image, UnidentifiedImageError

    from pulmo.models.detector import import_engine

    import_engine()
    (tmp_path / "n.png").write_text("not an image")
    with pytest.raises(UnidentifiedImageError):  # not ultralytics' attempt to install a HEIF plugin
        Image.open(tmp_path / "n.png")
