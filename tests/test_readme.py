"""The README stays readable and its commands point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_code_fences_are_balanced() -> None:
    fences = [line for line in README.splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0, "an unclosed ``` block swallows the rest of the README"
    closers = fences[1::2]
    assert all(line == "```" for line in closers), f"a fence that should close a block opens one: {closers}"


def test_named_scripts_and_configs_exist() -> None:
    paths = set(re.findall(r"\b((?:benchmarks|configs/experiments)/[\w./-]+\.(?:py|yaml))\b", README))
    assert paths, "the README names no benchmark script or experiment config"
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"README names files that do not exist: {missing}"
