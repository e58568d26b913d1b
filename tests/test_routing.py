"""Routing by content and out-of-scope refusal (``pulmo.frontdoor.routing``), on files made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pulmo.config import default_data_root
from pulmo.frontdoor.inputs import InputRejected, Limits, inspect_file
from pulmo.frontdoor.routing import route_file
from tests.frontdoor_fixtures import air_breathing, baggage_like, chest_phantom, image_file, wav


def route(path: Path, task: str | None = None):
    return route_file(path, inspect_file(path, Limits()), task)


def refused(path: Path, task: str | None = None) -> InputRejected:
    with pytest.raises(InputRejected) as err:
        route(path, task)
    message = str(err.value)
    assert message.startswith(path.name + ":") and "\n" not in message and str(path.parent) not in message
    return err.value


def write(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    sf.write(path, samples, rate, subtype=subtype)
    return path


# -- audio ------------------------------------------------------------------------------
@pytest.mark.parametrize("task", [None, "lung-sounds", "resp-rate"])
def test_silence_and_too_short_audio_get_no_label_whatever_the_task(tmp_path, task):
    silence = write(tmp_path / "silence.wav", np.zeros(8000 * 10, np.float32), 8000)
    assert refused(silence, task).code == "digital_silence"
    one = write(tmp_path / "one.wav", np.array([0.5], np.float32), 8000)
    assert refused(one, task).code == "too_short"
    second = write(tmp_path / "second.wav", sf.read(wav(tmp_path / "b.wav", 1.0, 8000))[0], 8000)
    err = refused(second, task)
    assert err.code == "too_short" and "1.0 s of sound" in str(err)
    quiet = write(tmp_path / "quiet.wav", 1e-3 * sf.read(wav(tmp_path / "c.wav", 10.0, 8000))[0], 8000, "FLOAT")
    assert refused(quiet, task).code == "too_quiet"


def test_noise_tones_and_square_waves_are_not_respiratory(tmp_path):
    rate, t = 8000, np.arange(8000 * 10) / 8000
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, len(t)).astype(np.float32)
    assert refused(write(tmp_path / "noise.wav", noise, rate)).code == "stationary_noise"
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    assert refused(write(tmp_path / "tone.wav", tone, rate)).code == "tone"
    square = np.sign(np.sin(2 * np.pi * 200 * t)).astype(np.float32)  # full scale: clipped and periodic
    err = refused(write(tmp_path / "square.wav", square, rate), "lung-sounds")
    assert err.code == "tone" and "not respiratory" in str(err)


def test_nan_samples_are_refused_as_unreadable(tmp_path):
    x = np.full(8000 * 5, np.nan, np.float32)
    err = refused(write(tmp_path / "nan.wav", x, 8000, "FLOAT"))
    assert (err.status, err.code) == (400, "unreadable_samples") and "NaN" in str(err)


def test_a_stethoscope_recording_gets_lung_sounds_and_the_rate(tmp_path):
    r = route(wav(tmp_path / "chest.wav", seconds=8.0, rate=4000))
    assert r.content == "stethoscope recording" and r.tasks == ("lung-sounds", "resp-rate")
    assert "above 1 kHz" in r.reason and r.measurements["high_band_fraction"] < 0.35
    short = route(wav(tmp_path / "short.wav", seconds=3.0, rate=4000))
    assert short.tasks == ("lung-sounds",) and "too short (3.0 s) for the breathing rate" in short.warnings[0]


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_air_microphone_breathing_goes_to_the_rate(tmp_path, rate):
    r = route(write(tmp_path / "phone.wav", air_breathing(12.0, rate), rate))
    assert r.tasks == ("resp-rate",) and r.content.startswith("breathing through the air")


def test_slow_audio_goes_to_the_rate_alone_and_lung_sounds_need_4khz(tmp_path):
    path = wav(tmp_path / "slow.wav", seconds=10.0, rate=2000)
    assert route(path).tasks == ("resp-rate",)
    assert refused(path, "lung-sounds").code == "sample_rate"


def test_clipping_is_a_warning_not_a_refusal(tmp_path):
    x = sf.read(wav(tmp_path / "a.wav", seconds=8.0, rate=8000))[0]
    clipped = write(tmp_path / "clipped.wav", np.clip(8 * x, -1, 1), 8000)
    r = route(clipped)
    assert r.tasks[0] == "lung-sounds" and any("clipped at full scale" in w for w in r.warnings)


# -- images -----------------------------------------------------------------------------
def test_blank_black_and_empty_images_are_refused(tmp_path):
    assert refused(image_file(tmp_path / "black.png", np.zeros((128, 128)))).code == "all_black"
    assert refused(image_file(tmp_path / "gray.png", np.full((128, 128), 0.5)), "cxr").code == "blank"
    dot = np.full((256, 256), 0.5)
    dot[100:120, 100:120] = 1.0
    assert refused(image_file(tmp_path / "dot.png", dot), "detect").code == "almost_empty"


def test_a_colour_baggage_scan_never_reaches_the_chest_model(tmp_path):
    path = image_file(tmp_path / "bag.jpg", baggage_like())
    r = route(path)
    assert r.tasks == ("detect",) and r.content.startswith("colour image")
    err = refused(path, "cxr")
    assert err.code == "not_chest_xray" and "colour image" in str(err)


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("I;16", ".png"), ("F", ".tif")])
def test_a_chest_xray_goes_to_cxr_at_any_bit_depth(tmp_path, mode, suffix):
    r = route(image_file(tmp_path / f"chest{suffix}", chest_phantom(), mode))
    assert r.tasks == ("cxr",) and r.measurements["chest_gate"]["accepted"]


def test_what_is_not_a_frontal_chest_xray_is_refused_or_sent_to_detection(tmp_path):
    from pulmo.data.adapters.synthetic_xray import synthetic_body_scan

    rotated = image_file(tmp_path / "rotated.png", np.rot90(chest_phantom()))
    err = refused(rotated)
    assert err.code == "not_chest_xray" and "--task detect" in str(err)
    scan = synthetic_body_scan(np.random.default_rng(0), 600, 480)[0] / 65535.0
    assert route(image_file(tmp_path / "scan.png", scan, "I;16")).tasks == ("detect",)
    assert refused(image_file(tmp_path / "scan8.png", scan), "cxr").code == "not_chest_xray"


def test_a_drawing_that_is_its_own_mirror_image_is_refused_and_told_why(tmp_path):
    """A film's heart breaks left-right symmetry; the bundled demo drawing and the phantom made
    symmetric do not, although their layout is a chest's."""
    from pulmo.cxr.gate import MAX_MIRROR, bundled_gate, mirror

    phantom = chest_phantom()
    symmetric = (phantom + phantom[:, ::-1]) / 2
    assert mirror(phantom) < MAX_MIRROR < mirror(symmetric)
    assert bundled_gate().score(phantom).accepted and not bundled_gate().score(symmetric).accepted
    demo = Path(__file__).resolve().parents[1] / "src" / "pulmo" / "assets" / "demo_cxr.png"
    for path in (image_file(tmp_path / "symmetric.png", symmetric), demo):
        err = refused(path)
        assert err.code == "not_chest_xray" and "its own mirror image" in str(err), path
        assert refused(path, "cxr").code == "not_chest_xray"


def test_each_refusal_by_the_chest_gate_names_what_failed(tmp_path):
    """A smooth gradient lies close to the mean chest film but lacks its fine structure; a chest
    film on its side fails the layout."""
    ramp = np.tile(np.linspace(0, 1, 256), (256, 1)).T + 0.01 * np.random.default_rng(0).random((256, 256))
    err = refused(image_file(tmp_path / "gradient.png", np.clip(ramp, 0, 1)), "cxr")
    assert "fine structure" in str(err) and "mirror" not in str(err)
    err = refused(image_file(tmp_path / "rotated.png", np.rot90(chest_phantom())), "cxr")
    assert "layout does not match" in str(err)


# -- real files, where the shared data is present ----------------------------------------
def test_real_baggage_and_rrujo_files_route_where_they_belong():
    data = default_data_root()
    bags = sorted((data / "xray_det" / "sixray_subset" / "test" / "images").glob("*.jpg"))[:10]
    rrujo = sorted((data / "rrujo" / "audio").glob("*/*/*.flac"))[::25]
    if not bags or not rrujo:
        pytest.skip(f"shared SIXray / RRuJO data not found under {data}")
    assert all(route(p).tasks == ("detect",) for p in bags)
    assert all("resp-rate" in route(p).tasks for p in rrujo)


def test_a_loud_wheeze_is_tonal_but_not_refused_as_a_tone(tmp_path):
    from pulmo.data.adapters.synthetic import synth_cycle

    x = synth_cycle("wheeze", 4000, 6.0, np.random.default_rng(0))
    r = route(write(tmp_path / "wheeze.wav", x, 4000))
    assert r.measurements["tonal_fraction"] > 0.5 and r.tasks[0] == "lung-sounds"
