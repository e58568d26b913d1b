"""Results people can read and keep: one self-contained HTML report per analysis (figures
inlined as PNG data URIs, so the file can be mailed or archived alone), and the files
written by ``pulmo analyze --out``."""

from __future__ import annotations

import base64
import functools
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#1b1b1b}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td:nth-child(3),th:nth-child(3){text-align:left}
.meta td{text-align:left}.meta th{text-align:left}
.headline{font-size:1.15em;background:#eef5ff;padding:.6em .9em;border-left:4px solid #3b7dd8}
.note{color:#555;font-size:.85em}.warning{background:#fff4e5;border-left:4px solid #e08a00;padding:.5em .9em}figure{margin:1em 0}img{max-width:100%}
"""


@functools.lru_cache(maxsize=1)
def _template() -> Any:
    """The Jinja2 report template (``templates/report.html.j2``), autoescaped, loaded once."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("pulmo.frontdoor", "templates"), autoescape=select_autoescape(["j2"]))
    env.tests["float"] = lambda v: isinstance(v, float)
    return env.get_template("report.html.j2")


def render_html(result: Mapping[str, Any], figures: Mapping[str, bytes], created: datetime | None = None) -> str:
    """The report for one analysis envelope (see ``capabilities.envelope``) and its figures
    (``name -> PNG bytes``; a figure listed in the result but absent here is named, not drawn)."""
    created = created or datetime.now(timezone.utc)
    inp, model = result["input"], result.get("model", {})
    meta: list[tuple[str, str]] = [
        ("file", inp["name"]),
        ("file SHA-256", inp["sha256"]),
        ("format", f"{inp['kind']} ({inp['format']}), {inp['bytes']} bytes"),
        ("task", result["task"]),
        ("model", model.get("name", "?")),
        ("checkpoint", f"{model.get('checkpoint', '?')} (SHA-256 {model.get('sha256', '?')})"),
        ("model trained with", f"pulmo {model.get('pulmo_version', '?')}"),
        ("analysed with", f"pulmo {result['pulmo_version']}"),
        ("report made", created.strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    if model.get("evaluation"):
        meta.insert(5, ("how good the model is", model["evaluation"]))
    for key in ("duration_s", "sample_rate_hz", "channels", "width", "height", "mode"):
        if key in inp:
            meta.append((key.replace("_", " "), str(inp[key])))
    encoded = {name: base64.b64encode(png).decode("ascii") for name, png in figures.items()}
    return _template().render(result=result, figures=encoded, meta=meta, style=STYLE,
                              result_json=json.dumps(result, indent=2))


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(out: Path, stem: str, result: Mapping[str, Any], figures: Mapping[str, bytes]) -> list[Path]:
    """``OUT/STEM.json``, ``OUT/STEM.html`` and ``OUT/STEM_<figure>.png``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.html"]
    write_atomic(paths[0], json.dumps(result, indent=2).encode())
    write_atomic(paths[1], render_html(result, figures).encode())
    for name, png in figures.items():
        paths.append(out / f"{stem}_{name}.png")
        write_atomic(paths[-1], png)
    return paths
