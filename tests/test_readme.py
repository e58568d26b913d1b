"""The README stays a front page, and it and the docs pages point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}


def test_readme_is_a_front_page_and_its_links_resolve() -> None:
    assert len(README.splitlines()) <= 200, "README.md is the front page: move detail to docs/"
    for page, text in PAGES.items():
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to a missing {target}"


def test_code_fences_are_balanced() -> None:
    for page, text in PAGES.items():
        fences = [line for line in text.splitlines() if line.startswith("```")]
        assert len(fences) % 2 == 0, f"an unclosed ``` block swallows the rest of {page.name}"
        closers = fences[1::2]
        assert all(line == "```" for line in closers), f"{page.name}: a fence that should close a block opens one: {closers}"


def test_named_scripts_and_configs_exist() -> None:
    text = "\n".join(PAGES.values())
    paths = {p.removeprefix("../") for p in
             re.findall(r"((?:\.\./)?(?:benchmarks|configs/experiments)/[\w./-]+\.(?:py|yaml))\b", text)}
    assert paths, "the README and docs name no benchmark script or experiment config"
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"README names files that do not exist: {missing}"


def test_the_readme_python_example_runs_and_prints_each_capability(monkeypatch, capsys) -> None:
    import pytest

    pytest.importorskip("ultralytics")
    block = README.split("### Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 13, "the quickstart example is meant to be short"
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ->")[0] for line in lines[:4]] == ["lung-sounds", "resp-rate", "cxr", "detect"]
    assert "breaths/min" in lines[1] and "cycles" in lines[0] and lines[4].startswith("[")
    assert lines[2].startswith("cxr -> refused:") and "its own mirror image" in lines[2]  # the demo drawing
