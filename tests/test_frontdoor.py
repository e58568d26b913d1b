"""The front door without a server: input checks, capability choice, result envelope,
report, and ``pulmo analyze`` on bundled and made-up files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from pulmo.cli import main
from pulmo.frontdoor.capabilities import CAPABILITIES, Analysis, capability_names, envelope
from pulmo.hashing import sha256_file
from pulmo.frontdoor.inputs import InputInfo, InputRejected, Limits, inspect_file, sniff
from pulmo.frontdoor.lung_sounds import adventitious_probabilities
from pulmo.frontdoor.report import render_html
from pulmo.frontdoor.routing import route_file
from pulmo.inference.bundled import ASSETS, default_checkpoint
from tests.frontdoor_fixtures import (FakeImageCapability, chest_phantom, image_file, png, png_header_only, truncated,
                                     wav)

DEMO = ASSETS / "demo_lung_sounds.flac"


def rejected(path: Path, limits: Limits = Limits()) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        inspect_file(path, limits)
    return info.value


@pytest.fixture
def lung_sounds_only(monkeypatch):
    """The registry as on a checkout with lung sounds alone, whatever else has joined since."""
    capability_names()  # the real ones register first
    monkeypatch.setattr(CAPABILITIES, "_items", {"lung-sounds": CAPABILITIES.get("lung-sounds")})


@pytest.fixture
def fake_image(lung_sounds_only, monkeypatch, tmp_path):
    """Lung sounds and a fake image capability, for the duration of one test."""
    ckpt = tmp_path / "fake.pt"
    ckpt.write_bytes(b"fake weights")
    cap = FakeImageCapability(ckpt)
    monkeypatch.setitem(CAPABILITIES._items, cap.name, cap)
    return cap


def test_good_audio_and_image_headers(tmp_path):
    info = inspect_file(wav(tmp_path / "a.wav", seconds=3.0, rate=8000), Limits())
    assert (info.kind, info.format) == ("audio", "WAV")
    assert info.details == {"sample_rate_hz": 8000, "channels": 1, "duration_s": 3.0, "subtype": "PCM_16"}
    img = inspect_file(png(tmp_path / "a.png", (64, 48)), Limits())
    assert (img.kind, img.format, img.details["width"], img.details["height"], img.details["bits_per_sample"]) == (
        "image", "PNG", 64, 48, 8)
    assert inspect_file(png(tmp_path / "b.png", mode="I;16"), Limits()).details["bits_per_sample"] == 16


def test_every_bad_input_class_is_rejected_with_status_and_reason(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    assert (rejected(tmp_path / "empty.wav").status, rejected(tmp_path / "empty.wav").code) == (400, "empty")
    (tmp_path / "notes.wav").write_text("these are not samples")
    err = rejected(tmp_path / "notes.wav")
    assert (err.status, err.code) == (415, "wrong_type") and "notes.wav" in str(err)
    good = wav(tmp_path / "good.wav", seconds=4.0)
    err = rejected(truncated(good, tmp_path / "cut.wav"))
    assert (err.status, err.code) == (400, "truncated") and "promises 32000 bytes" in str(err)
    flac = tmp_path / "good.flac"
    sf.write(flac, sf.read(good)[0], 4000)
    assert rejected(truncated(flac, tmp_path / "cut.flac")).code == "truncated"
    assert rejected(truncated(png(tmp_path / "p.png", (200, 200)), tmp_path / "cut.png", 0.6)).code == "truncated"
    err = rejected(good, Limits(max_upload_bytes=1000))
    assert (err.status, err.code) == (413, "too_large")
    err = rejected(good, Limits(max_audio_seconds=3.0))
    assert (err.status, err.code) == (413, "too_long") and "4.0 s" in str(err)
    err = rejected(wav(tmp_path / "low.wav", rate=800))
    assert (err.status, err.code) == (422, "sample_rate") and "800 Hz" in str(err)
    err = rejected(png_header_only(tmp_path / "bomb.png", 9000, 9000))
    assert (err.status, err.code) == (413, "too_many_pixels") and "81000000 pixels" in str(err)
    err = rejected(png_header_only(tmp_path / "huge.png", 100_000, 100_000))  # Pillow's own bomb guard fires first
    assert (err.status, err.code) == (413, "too_many_pixels")
    err = rejected(png(tmp_path / "dot.png", (1, 1)))
    assert (err.status, err.code) == (422, "too_small")


def test_sniff_knows_formats_by_their_first_bytes():
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == ("audio", "WAV")
    assert sniff(b"RIFF\x00\x00\x00\x00AVI LIST") is None
    assert sniff(b"fLaC\x00") == ("audio", "FLAC")
    assert sniff(b"\xff\xd8\xff\xe0") == ("image", "JPEG")
    assert sniff(b"\xff\xfb\x90\x00") == ("audio", "MP3")
    assert sniff(b"%PDF-1.7") is None


def test_route_by_content_and_by_name(tmp_path, fake_image):
    audio = wav(tmp_path / "a.wav", seconds=3.0, rate=8000)
    chest = image_file(tmp_path / "x.png", chest_phantom())
    route = lambda path, task=None: route_file(path, inspect_file(path, Limits()), task)  # noqa: E731
    assert route(audio).tasks == ("lung-sounds",)
    assert route(chest, "fake-image").tasks == ("fake-image",)
    with pytest.raises(InputRejected) as err:
        route(chest, "lung-sounds")
    assert (err.value.status, err.value.code) == (415, "wrong_kind")
    with pytest.raises(InputRejected) as err:
        route(audio, "no-such-task")
    assert (err.value.status, err.value.code) == (422, "unknown_task")


def test_an_image_without_an_image_capability_is_refused_clearly(tmp_path, lung_sounds_only):
    chest = image_file(tmp_path / "x.png", chest_phantom())
    with pytest.raises(InputRejected) as err:
        route_file(chest, inspect_file(chest, Limits()))
    assert (err.value.status, err.value.code) == (415, "no_capability") and "lung-sounds (audio)" in str(err.value)


def test_envelope_enforces_the_capability_contract():
    info = InputInfo("a.wav", 10, "audio", "WAV", {"duration_s": 1.0})
    model = {"name": "m", "checkpoint": "m.pt", "sha256": "a" * 64, "pulmo_version": "0.1.0"}
    env = envelope(Analysis("t", "fine", {"model": model, "x": 1, "rate": 20.25146484375, "p": [1 / 3]}), info, "b" * 64)
    assert (env["rate"], env["p"]) == (20.2515, [0.3333])  # no spurious precision
    assert env["input"] == {"name": "a.wav", "sha256": "b" * 64, "bytes": 10, "kind": "audio", "format": "WAV",
                            "duration_s": 1.0}
    assert env["model"] == model and env["x"] == 1 and env["pulmo_version"]
    with pytest.raises(ValueError, match="full SHA-256"):
        envelope(Analysis("t", "h", {"model": {**model, "sha256": "abc"}}), info, "b" * 64)
    with pytest.raises(ValueError, match="without model"):
        envelope(Analysis("t", "h", {"model": {"name": "m"}}), info, "b" * 64)
    with pytest.raises(ValueError, match="reserved"):
        envelope(Analysis("t", "h", {"model": model, "input": 1}), info, "b" * 64)


def test_crackle_and_wheeze_probabilities_count_both():
    assert adventitious_probabilities({"normal": 0.1, "crackle": 0.2, "wheeze": 0.3, "both": 0.4}) == pytest.approx(
        (0.6, 0.7))


def test_report_escapes_what_it_shows_and_inlines_figures():
    result = {"task": "t", "pulmo_version": "0.1.0", "headline": "<b>loud</b>",
              "input": {"name": "<script>x</script>.wav", "sha256": "c" * 64, "bytes": 5, "kind": "audio",
                        "format": "WAV"},
              "model": {"name": "m", "checkpoint": "m.pt", "sha256": "d" * 64, "pulmo_version": "0.1.0"},
              "table": {"columns": ["a", "b"], "rows": [[1.23456, "<i>"]]},
              "figures": [{"name": "f", "caption": "cap"}, {"name": "g", "caption": "missing"}]}
    page = render_html(result, {"f": b"\x89PNGfake"})
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;.wav" in page
    assert "&lt;b&gt;loud&lt;/b&gt;" in page and "<td>1.235</td>" in page and "&lt;i&gt;" in page
    assert "data:image/png;base64,iVBOR2Zha2U=" in page and "(figure g not available)" in page
    assert "d" * 64 in page and "c" * 64 in page


def test_analyze_picks_the_task_and_writes_json_report_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(DEMO), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "demo_lung_sounds.flac: 10 cycles from annotation" in printed and "lung-sounds model" in printed
    result = json.loads((out / "demo_lung_sounds.json").read_text())
    assert result["task"] == "lung-sounds" and len(result["cycles"]) == 10
    assert result["model"]["sha256"] == sha256_file(default_checkpoint("lung-sounds"))
    assert result["input"]["sha256"] == sha256_file(DEMO) and result["input"]["duration_s"] == pytest.approx(26.815)
    report = (out / "demo_lung_sounds.html").read_text()
    assert result["headline"] in report and "data:image/png;base64," in report
    assert (out / "demo_lung_sounds_timeline.png").read_bytes().startswith(b"\x89PNG")


def test_analyze_a_folder_keeps_going_and_lists_failures(tmp_path, capsys, lung_sounds_only):
    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    wav(folder / "one.wav", seconds=3.0)
    wav(folder / "sub" / "one.wav", seconds=2.0)  # same stem: gets its own output name
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    (folder / "readme.txt").write_text("not analysed: not an audio or image suffix")
    png(folder / "scan.png")
    out = tmp_path / "out"
    code = main(["analyze", str(folder), "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    results = json.loads(captured.out)
    analysed = [r for r in results if "refused" not in r]
    assert sorted(r["input"]["path"] for r in analysed) == [str(folder / "one.wav"), str(folder / "sub" / "one.wav")]
    refused = {r["input"]["name"]: r["refused"] for r in results if "refused" in r}
    assert set(refused) == {"broken.wav", "scan.png"} and refused["broken.wav"]["code"] == "corrupt"
    assert json.loads((out / "broken.json").read_text())["refused"] == refused["broken.wav"]
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0] == "file,path,status,tasks,result,code,warnings" and len(summary) == 5
    assert sum(",refused," in row for row in summary) == 2 and sum(",analysed,lung-sounds," in row for row in summary) == 2
    assert (out / "one.json").is_file() and (out / "one-2.json").is_file()
    assert "2 file(s) failed" in captured.err and "broken.wav" in captured.err and "scan.png" in captured.err
    assert main(["analyze", str(folder / "broken.wav")]) == 2
