import json

import pytest
import soundfile as sf

from pulmo import cli
from pulmo.cli import main
from pulmo.data.adapters.synthetic import synth_cycle


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from pulmo.data.adapters.synthetic import write_icbhi_folder
    from pulmo.engine.train import run_experiment
    from tests.test_train_and_checkpoint import tiny_config

    root = write_icbhi_folder(tmp_path_factory.mktemp("d") / "icbhi", n_patients=6, seed=5)
    out = tmp_path_factory.mktemp("r")
    run_experiment(tiny_config(root, limit_train_batches=1), out, progress=False)
    return root, out / "model.pt"


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
    import numpy as np

    good = tmp_path / "good.wav"
    sf.write(good, synth_cycle("wheeze", 4000, 6.0, np.random.default_rng(0)), 4000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFFjunk")
    code = main(["analyze", str(good), str(bad), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
                 "--unannotated", "windows"])
    captured = capsys.readouterr()
    assert code == 1
    assert "good.wav: 4 cycles from windows" in captured.out
    assert "skipped" in captured.err and "1 file(s) failed" in captured.err
    result = json.loads((tmp_path / "out" / "good.json").read_text())
    assert result["model"]["sha256"] and len(result["cycles"]) == 4
    assert result["cycles"][-1]["end_s"] == 6.0
