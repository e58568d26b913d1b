"""What the resp-rate benchmarks and ``pulmo evaluate --task resp-rate`` write for people to read."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_run_folders_are_named_relative_to_the_repository(tmp_path):
    from resp_rate import shown

    assert shown(ROOT / "runs" / "resp_rate" / "row" / "seed0") == Path("runs/resp_rate/row/seed0")
    assert shown(tmp_path) == tmp_path.resolve()  # outside the repository: kept whole
