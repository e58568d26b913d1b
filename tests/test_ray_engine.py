"""``pulmo analyze FOLDER --engine ray``: a local 2-worker Ray cluster gives the same outputs,
file for file, as the single-process run (the HTML's "report made" time aside)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pulmo.cli import main
from tests.frontdoor_fixtures import chest_phantom, image_file, wav

ray = pytest.importorskip("ray", reason="the ray extra is not installed")



@pytest.fixture
def ray_session(monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    yield
    ray.shutdown()


def _files(folder: Path) -> dict[str, bytes]:
    stamp = re.compile(rb"<tr><th>report made</th><td>[^<]*</td></tr>")
    return {p.name: stamp.sub(b"", p.read_bytes()) for p in sorted(folder.iterdir())}


def test_ray_engine_matches_the_local_run_file_for_file(tmp_path, ray_session, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    wav(inputs / "breath.wav", seconds=12.0)
    image_file(inputs / "xray.png", chest_phantom())
    (inputs / "broken.wav").write_bytes(b"not audio at all")

    assert main(["analyze", str(inputs), "--out", str(tmp_path / "local")]) == 1
    local_err = capsys.readouterr().err
    assert main(["analyze", str(inputs), "--engine", "ray", "--workers", "2", "--out", str(tmp_path / "ray")]) == 1
    ray_err = capsys.readouterr().err

    local, distributed = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == sorted(distributed)
    assert {"breath.json", "xray.json", "broken.json", "summary.csv"} <= set(local)
    for name in local:
        assert local[name] == distributed[name], name
    # the refused file is summarised the same way at the end of both runs
    assert "1 file(s) failed:" in local_err and "1 file(s) failed:" in ray_err
    assert local_err.split("1 file(s) failed:")[1] == ray_err.split("1 file(s) failed:")[1]


def test_ray_engine_refuses_a_bad_worker_count(tmp_path, capsys):
    wav(tmp_path / "breath.wav")
    assert main(["analyze", str(tmp_path / "breath.wav"), "--engine", "ray", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
