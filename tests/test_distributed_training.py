"""``pulmo train CONFIG --devices 2 --strategy ddp``: the smoke configs train in two CPU
processes (DDP over gloo), and both processes end with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pulmo.data.adapters.synthetic import write_icbhi_folder
from pulmo.engine.launch import Launch
from pulmo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke"


def _train(config: Path, data_root: Path, out: Path, *launch: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pulmo.cli", "train", str(config), "--set", f"data.root={data_root}",
           "--out", str(out), "--quiet", "--json", *launch]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=out.parent)


def test_lung_sounds_smoke_config_trains_with_ddp_on_two_cpu_processes(tmp_path):
    data = write_icbhi_folder(tmp_path / "icbhi", n_patients=6, seed=3)
    run = _train(SMOKE / "lung_sounds.yaml", data, tmp_path / "run", "--devices", "2", "--strategy", "ddp")
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ranks = metrics["ranks"]
    assert ranks["world_size"] == 2 and len(ranks["weights_sha256"]) == 2
    assert ranks["agree"], ranks
    assert (tmp_path / "run" / "model.pt").is_file()
    assert json.loads(run.stdout)["test"]["n"] > 0  # rank 0 reports once; rank 1 prints nothing


def test_launch_options_are_checked():
    assert Launch(devices=2, strategy="ddp").trainer_kwargs()["strategy"] == "ddp"
    for bad in ({"strategy": "horovod"}, {"devices": 0}, {"num_nodes": 0}):
        with pytest.raises(ConfigError):
            Launch(**bad)
