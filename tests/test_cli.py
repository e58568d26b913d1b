import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pulmo import cli
from pulmo.cli import main
from pulmo.data.adapters.synthetic import synth_cycle


@pytest.fixture(scope="module")
def checkpoint(tiny_lung_checkpoint):
    return tiny_lung_checkpoint


def test_evaluate_json_contract(checkpoint, capsys, tmp_path):
    root, ckpt = checkpoint
    rows = tmp_path / "cycles.csv"
    assert main(["evaluate", "--task", "lung-sounds", "--data", str(root), "--split", "test", "--checkpoint", str(ckpt),
                 "--json", "--cycles-out", str(rows)]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("sensitivity", "specificity", "score", "n", "checkpoint", "checkpoint_sha256"):
        assert key in report
    assert 0 <= report["score"] <= 1 and report["n"] == 8
    lines = rows.read_text().splitlines()
    assert len(lines) == 1 + 8 and lines[0].startswith("record_id,split,device,location,annotated,predicted,p_normal")


def test_errors_are_one_line_and_exit_2(tmp_path, checkpoint, capsys, monkeypatch):
    _, ckpt = checkpoint
    assert main(["evaluate", "--data", str(tmp_path / "missing"), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pulmo: error: no ICBHI annotations folder") and err.count("\n") == 1
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    monkeypatch.delitem(cli.TASK_COMMANDS, "lung-sounds")
    assert main(["evaluate", "--task", "lung-sounds", "--checkpoint", str(ckpt)]) == 2
    assert "not available yet" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["reproduce", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.yaml"), "--out", str(tmp_path), "--pretrained", str(tmp_path / "deit.pth")]) == 2
    assert "--pretrained: file not found" in capsys.readouterr().err


def test_analyze_keeps_going_past_a_bad_file(tmp_path, checkpoint, capsys):
    _, ckpt = checkpoint
    good = tmp_path / "good.wav"
    sf.write(good, synth_cycle("wheeze", 4000, 6.0, np.random.default_rng(0)), 4000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFFjunk")
    code = main(["analyze", str(good), str(bad), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
                 "--unannotated", "windows"])
    captured = capsys.readouterr()
    assert code == 1
    assert "good.wav: 4 cycles from windows" in captured.out
    assert "skipped" in captured.err and "1 file(s) failed" in captured.err and "RIFF" not in captured.err
    result = json.loads((tmp_path / "out" / "good.json").read_text())
    assert result["model"]["sha256"] and len(result["cycles"]) == 4
    assert result["cycles"][-1]["end_s"] == 6.0


def _no_model(*args, **kwargs):
    raise AssertionError("a model ran")


def test_analyze_refuses_a_symlink_to_a_secret_in_one_line_without_its_content(tmp_path, capsys, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET-CONTENT\n")
    targets = [secret] + [p for p in [Path("/etc/passwd")] if p.is_file()]
    for i, target in enumerate(targets):
        link = tmp_path / f"x{i}.wav"
        link.symlink_to(target)
        assert main(["analyze", str(link)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"x{i}.wav" in err and "not a recognised audio" in err, err
        assert "root:" not in err and "SECRET" not in err and str(target) not in err, err


def test_analyze_a_missing_file_names_it_once(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.wav")]) == 2
    assert capsys.readouterr().err == f"pulmo: skipped {tmp_path / 'nope.wav'}: file not found\n"


def test_analyze_checks_out_before_any_model_runs(tmp_path, capsys, monkeypatch):
    import pulmo.frontdoor.capabilities as capabilities

    monkeypatch.setattr(capabilities, "analyze_path", _no_model)
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(8000, dtype=np.float32), 4000)
    (tmp_path / "afile").write_text("a file, not a folder")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main(["analyze", str(good), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"pulmo: error: --out {out}: cannot write there") and err.count("\n") == 1, err


def test_analyze_exit_codes(tmp_path, capsys, monkeypatch):
    """0 every file analysed, 1 some refused, 2 none analysed; an unreadable input is skipped."""
    import pulmo.frontdoor.capabilities as capabilities

    def fake(path, *args, **kwargs):
        if path.name.startswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return {"input": {}, "headline": "ok", "model": {"name": "m", "checkpoint": "c", "sha256": "s"},
                "task": "t", "pulmo_version": "v", "table": None}, None

    monkeypatch.setattr(capabilities, "analyze_path", fake)
    ok, locked = tmp_path / "ok.wav", tmp_path / "locked.wav"
    assert main(["analyze", str(ok), "--json"]) == 0
    assert main(["analyze", str(ok), str(locked), "--json"]) == 1
    assert main(["analyze", str(locked)]) == 2
    assert capsys.readouterr().err.endswith(f"pulmo: skipped {locked}: Permission denied\n")


def test_an_oserror_on_a_users_path_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "out" / "x.json"

    def fails_on(filename):
        def command(args):
            raise OSError(28, "No space left on device", str(filename))
        return command

    monkeypatch.setattr(cli, "cmd_analyze", fails_on(mine))
    assert main(["analyze", "a.wav", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"pulmo: error: {mine}: No space left on device\n"
    monkeypatch.setattr(cli, "cmd_analyze", fails_on("/usr/lib/pulmo-internal/model.bin"))
    with pytest.raises(OSError, match="No space left"):
        main(["analyze", "a.wav", "--out", str(tmp_path / "out")])


def test_analyze_windows_flag_asks_for_the_per_window_rate_table(capsys):
    from pulmo.catalog import ASSETS

    breath = str(ASSETS / "demo_breath.flac")
    assert main(["analyze", breath, "--task", "resp-rate", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)[0]
    assert main(["analyze", breath, "--task", "resp-rate", "--windows", "--json"]) == 0
    by_window = json.loads(capsys.readouterr().out)[0]
    assert len(by_window["table"]["rows"]) == len(by_window["windows"]) >= 2
    assert default["table"]["columns"][:2] == ["estimate", "breaths/min"]  # without the flag: one row per estimator
    assert by_window["table"]["columns"] != default["table"]["columns"]


def test_printed_output_names_a_bundled_model_by_its_card_and_another_by_its_stored_name():
    from pulmo.catalog import ASSETS, model_title
    from pulmo.hashing import sha256_file

    sha = sha256_file(ASSETS / "detect_yolov5n_baggage.pt")[:12]
    assert model_title("detect_yolov5n_baggage.pt", sha, "baggage_fig11_ideal_long_stage4") == \
        "detect model: YOLOv5n with tiled inference"
    assert model_title("detect_yolov5n_baggage.pt", "0" * 12, "mine") == "mine"  # a file of one's own, same name
    assert model_title("my_run.pt", sha, "my experiment") == "my experiment"
