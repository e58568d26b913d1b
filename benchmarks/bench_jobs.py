"""Run benchmark jobs as separate processes, a few at a time, each with its own log file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_logged(commands: Sequence[tuple[str, list[str], Path]], jobs: int) -> None:
    """Run each ``(name, argv, log)`` in the repository root with one CPU thread, ``jobs`` at a
    time, output to ``log``; print each exit status; exit the script if any failed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def one(command: tuple[str, list[str], Path]) -> int:
        name, argv, log = command
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as fh:
            rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
        print(f"{name}: exit {rc} ({log})", flush=True)
        return rc

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(one, commands))
    if any(codes):
        sys.exit("some runs failed; see their logs")
