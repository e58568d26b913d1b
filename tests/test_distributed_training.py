"""``pulmo train CONFIG --devices 2 --strategy ddp``: every smoke config under configs/smoke/
trains in two CPU processes (DDP over gloo), and both processes end with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pulmo.cxr.synthetic import write_xray_folder
from pulmo.data.adapters.synthetic import write_icbhi_folder
from pulmo.data.adapters.synthetic_breath import write_breath_folder
from pulmo.data.adapters.synthetic_xray import write_synthetic_body_scans
from pulmo.engine.experiments import DISTRIBUTED, engine_for, experiment_task
from pulmo.engine.launch import Launch
from pulmo.errors import ConfigError
from pulmo.models.detector import engine_available

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke"

#: smoke config -> (the config key of the data folder, a synthetic dataset in its task's layout)
SMOKE_DATA: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "lung_sounds.yaml": ("data.root", lambda d: write_icbhi_folder(d / "icbhi", n_patients=6, seed=3)),
    "resp_rate.yaml": ("data.root", lambda d: write_breath_folder(d / "breaths", subjects=4, seconds=16.0)),
    "cxr.yaml": ("root", lambda d: write_xray_folder(d / "cxr", per_class=6, size_px=64, splits=("train", "val"), seed=3)),
    "detect.yaml": ("data.root", lambda d: write_synthetic_body_scans(d / "scans", {"train": 4, "val": 2, "test": 2}, seed=0,
                                                                      height=200, width=162, n_objects=(2, 4))),
}
#: smoke configs whose engine is an optional extra: name -> whether it is installed (checked without
#: letting ultralytics patch Pillow in this process: pulmo.models.detector.engine_available)
NEEDS: dict[str, Callable[[], bool]] = {"detect.yaml": engine_available}


def _train(config: Path, data: str, out: Path, *launch: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pulmo.cli", "train", str(config), "--set", data,
           "--out", str(out), "--quiet", "--json", *launch]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=out.parent)


def test_every_smoke_config_has_synthetic_data_and_an_engine():
    assert sorted(p.name for p in SMOKE.glob("*.yaml")) == sorted(SMOKE_DATA)
    assert {experiment_task(SMOKE / name) for name in SMOKE_DATA} == set(DISTRIBUTED)


@pytest.mark.parametrize("name", sorted(SMOKE_DATA))
def test_smoke_config_trains_with_ddp_on_two_cpu_processes(tmp_path, name):
    if name in NEEDS and not NEEDS[name]():
        pytest.skip(f"{name}: its engine is an optional extra that is not installed")
    key, make = SMOKE_DATA[name]
    run = _train(SMOKE / name, f"{key}={make(tmp_path)}", tmp_path / "run", "--devices", "2", "--strategy", "ddp")
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ranks = metrics["ranks"]
    assert ranks["world_size"] == 2 and len(ranks["weights_sha256"]) == 2
    assert ranks["agree"], ranks
    assert (tmp_path / "run" / "model.pt").is_file()
    assert set(json.loads(run.stdout)) == {"val", "test"}  # rank 0 reports once; rank 1 prints nothing


def test_launch_options_are_checked():
    assert Launch(devices=2, strategy="ddp").trainer_kwargs()["strategy"] == "ddp"
    for bad in ({"strategy": "horovod"}, {"devices": 0}, {"num_nodes": 0}):
        with pytest.raises(ConfigError):
            Launch(**bad)


def test_selection_values_keep_a_loss_tie_break_that_float32_would_lose():
    from pulmo.cxr.task import LOSS_TIE_BREAK
    from pulmo.engine.launch import selection_value

    lower_loss, higher_loss = (selection_value(0.8 - LOSS_TIE_BREAK * loss) for loss in (0.3, 0.4))
    assert lower_loss > higher_loss  # equal macro-F1: the lower validation loss wins
    assert torch.tensor(0.8 - LOSS_TIE_BREAK * 0.3) == torch.tensor(0.8 - LOSS_TIE_BREAK * 0.4)  # float32 merges them


def test_a_task_without_a_training_engine_is_named(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("task: segmentation\n")
    with pytest.raises(ConfigError, match="task 'segmentation' does not train through 'pulmo train'"):
        engine_for(cfg)
