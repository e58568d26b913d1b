"""Shared fixtures: everything is synthetic and written by the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

from pulmo.config import default_data_root  # noqa: E402
from pulmo.data.adapters.synthetic import write_icbhi_folder  # noqa: E402


@pytest.fixture
def icbhi_dir(tmp_path: Path) -> Path:
    """Six patients (three train, three test), four cycles each, last one without audio."""
    return write_icbhi_folder(tmp_path / "icbhi", n_patients=6, cycles_per_recording=4, seed=1)


@pytest.fixture(scope="session")
def real_icbhi() -> Path:
    """The shared ICBHI copy; tests using it skip cleanly where it is absent."""
    root = default_data_root() / "icbhi"
    if not (root / "annotations").is_dir():
        pytest.skip(f"real ICBHI data not found at {root}")
    return root


@pytest.fixture(scope="session")
def tiny_lung_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(icbhi_root, model.pt)``: a synthetic ICBHI folder and a lung-sound model trained on it
    for one batch (made once per test session)."""
    from pulmo.engine.train import run_experiment
    from tests.test_train_and_checkpoint import tiny_config

    root = write_icbhi_folder(tmp_path_factory.mktemp("d") / "icbhi", n_patients=6, seed=5)
    out = tmp_path_factory.mktemp("r")
    run_experiment(tiny_config(root, limit_train_batches=1), out, progress=False)
    return root, out / "model.pt"
