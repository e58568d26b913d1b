"""Models shipped inside the package (``pulmo/assets/*.pt``)."""

from __future__ import annotations

from pathlib import Path

from pulmo.catalog import ASSETS, BUNDLED
from pulmo.errors import CheckpointError

# for audio shorter than the default resp-rate model's shortest clip (benchmarks/resp_rate_short.py)
RESP_RATE_SHORT_CLIPS = BUNDLED["resp-rate-short"][0]
DEFAULT_CHECKPOINTS = {task: file for file, task, default, _ in BUNDLED.values() if default}


def bundled_checkpoints() -> list[Path]:
    return sorted(ASSETS.glob("*.pt"))


def resp_rate_short_checkpoint() -> Path | None:
    """The bundled short-clip resp-rate checkpoint, for audio too short for the default model; None if absent."""
    path = ASSETS / RESP_RATE_SHORT_CLIPS
    return path if path.is_file() else None


def default_checkpoint(task: str) -> Path:
    """The bundled checkpoint for ``task``; raises if the task has none yet."""
    name = DEFAULT_CHECKPOINTS.get(task)
    if name is None or not (ASSETS / name).is_file():
        raise CheckpointError(f"no bundled model for task {task!r} yet; pass --checkpoint")
    return ASSETS / name
