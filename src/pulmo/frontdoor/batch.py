"""``pulmo analyze FILE|FOLDER...``: every file through the front door, a readable summary,
and ``--out DIR`` with JSON + HTML report + figures per file; keeps going past bad files.

Exit status: 0 every file analysed; 1 some refused or failed; 2 none analysed, or a usage
error (``--out`` not writable, an empty folder), found before any model runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pulmo.errors import ConfigError, DataError, PulmoError

SUFFIXES = {".wav", ".flac", ".ogg", ".aif", ".aiff", ".mp3", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"}


def expand(items: Iterable[str]) -> list[Path]:
    """Files as given; folders replaced by the audio and image files under them (sorted)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise DataError(f"no audio or image files under folder {p}")
            out.extend(found)
        else:
            out.append(p)
    return out


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Output names: each file's stem, with ``-2``, ``-3``... where stems repeat in a batch."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0) + 1
        seen[p.stem] = n
        stems.append(p.stem if n == 1 else f"{p.stem}-{n}")
    return stems


def writable_out(out: Path) -> None:
    """Create ``out`` and write a scratch file there, so that an unusable ``--out`` is a
    one-line error before any model runs rather than a traceback after.

    Raises:
        ConfigError: the folder cannot be created or written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".pulmo-write-check-"):
            pass
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def refusal(path: Path, err: Exception) -> str:
    """One line for a file that was not analysed: its message without a repeated file name
    (an OSError: only what went wrong, e.g. "Permission denied")."""
    msg = (err.strerror or str(err)) if isinstance(err, OSError) else str(err)
    return msg.removeprefix(f"{path.name}: ").removeprefix(f"{path}: ")


def refused_entry(path: Path, err: Exception, message: str) -> dict[str, Any]:
    """The JSON kept for a file that was not analysed: which file, and why, in words
    (``status`` and ``code`` as the HTTP service answers them, where the front door refused it)."""
    return {"input": {"name": path.name, "path": str(path)},
            "refused": {"status": getattr(err, "status", None), "code": getattr(err, "code", None), "message": message}}


def _is_input_error(err: OSError, path: Path) -> bool:
    """Whether ``err`` is about reading the input file ``path`` itself (not a bug elsewhere)."""
    return err.filename is not None and os.path.abspath(err.filename) == os.path.abspath(path)


def format_table(table: dict[str, Any] | None) -> list[str]:
    if not table:
        return []
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in table["rows"]]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(table["columns"])]
    line = lambda vals: "  " + " ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return [line(table["columns"])] + [line(r) for r in cells]


def summary_lines(path: Path, result: dict[str, Any]) -> list[str]:
    """What ``pulmo analyze`` prints for one analysed file: the headline, what the file holds
    and why those capabilities ran, warnings, the model, the table, and each further
    capability's headline and model (or its error)."""
    def model_line(part: dict[str, Any]) -> str:
        model = part["model"]
        return (f"  {part['task']} model {model['name']} ({model['checkpoint']}, sha256 {model['sha256'][:12]}, "
                f"pulmo {result['pulmo_version']})")

    lines = [f"{path}: {result['headline']}"]
    if result.get("routing"):
        lines.append(f"  routed: {result['routing']['reason']} -> {', '.join(result['routing']['tasks'])}")
    lines += [f"  warning: {w}" for w in result.get("warnings", [])]
    lines += [model_line(result), *format_table(result["table"])]
    for part in result.get("also", []):
        if "error" in part:
            lines.append(f"  also {part['task']}: failed: {part['error']}")
        else:
            lines += [f"  also {part['task']}: {part['headline']}", *[f"    warning: {w}" for w in part.get("warnings", [])],
                      model_line(part)]
    return lines


def summary_csv(entries: Sequence[dict[str, Any]]) -> str:
    """One CSV row per file of a batch: file, path, status (analysed / refused), what ran, the
    headline (or why it was refused, with the refusal code), warnings; further capabilities'
    headlines are joined with ``|``."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "path", "status", "tasks", "result", "code", "warnings"])
    for e in entries:
        name, path = e["input"]["name"], e["input"].get("path", "")
        if "refused" in e:
            writer.writerow([name, path, "refused", "", e["refused"]["message"], e["refused"]["code"] or "", ""])
            continue
        parts = [e, *[a for a in e.get("also", []) if "error" not in a]]
        writer.writerow([name, path, "analysed", "+".join(p["task"] for p in parts),
                         " | ".join(p["headline"] for p in parts), "", " | ".join(e.get("warnings", []))])
    return buf.getvalue()


@dataclass
class Outcome:
    """One file of a batch: its ``result`` (the JSON envelope, or the refused entry), its
    figures (``name -> PNG bytes``) and, for a file that was not analysed, the one-line reason."""

    result: dict[str, Any]
    figures: dict[str, bytes] = field(default_factory=dict)
    failure: str | None = None


def analyze_one(path: Path, task: str | None, checkpoint: str | None, options: dict[str, Any]) -> Outcome:
    """``path`` through the front door; a refusal or an unreadable file is an :class:`Outcome`
    with ``failure`` set (any other error is a bug and propagates)."""
    from pulmo.frontdoor.capabilities import analyze_path

    try:
        result, figures = analyze_path(path, task, checkpoint, options)
    except (PulmoError, OSError) as err:
        if isinstance(err, OSError) and not _is_input_error(err, path):
            raise
        message = refusal(path, err)
        return Outcome(refused_entry(path, err, message), failure=message)
    result["input"]["path"] = str(path)  # which file, where names repeat across folders
    return Outcome(result, figures)


def analyze_files(args: argparse.Namespace) -> int:
    """Exit status: 0 all analysed, 1 some refused or failed, 2 none analysed (a usage error
    raises :class:`PulmoError` before any file is read). ``args.engine`` ``ray`` runs the files
    on a Ray cluster (:mod:`pulmo.frontdoor.ray_engine`), with the same outputs."""
    from pulmo.frontdoor.report import write_atomic, write_outputs

    paths = expand(args.files)
    options = {"annotation": getattr(args, "annotation", None), "unannotated": getattr(args, "unannotated", None),
               "windows": getattr(args, "windows", False)}
    out = Path(args.out) if args.out else None
    if out is not None:
        writable_out(out)
    if getattr(args, "engine", "local") == "ray":
        from pulmo.frontdoor.ray_engine import ray_outcomes

        outcomes: Iterable[Outcome] = ray_outcomes(paths, args.task, args.checkpoint, options,
                                                   address=args.address, workers=args.workers)
    else:
        outcomes = (analyze_one(p, args.task, args.checkpoint, options) for p in paths)
    results, failures = [], []
    bar = tqdm(zip(paths, unique_stems(paths), outcomes), total=len(paths), desc="analysing", unit="file",
               file=sys.stderr, disable=len(paths) < 2 or args.json)
    for path, stem, outcome in bar:
        results.append(outcome.result)
        if outcome.failure is not None:
            failures.append((str(path), outcome.failure))
            tqdm.write(f"pulmo: skipped {path}: {outcome.failure}", file=sys.stderr)
            if out is not None:
                write_atomic(out / f"{stem}.json", json.dumps(outcome.result, indent=2).encode())
            continue
        written = write_outputs(out, stem, outcome.result, outcome.figures) if out else []
        if not args.json:
            lines = summary_lines(path, outcome.result)
            if written:
                lines.append(f"  report: {written[1]}")
            tqdm.write("\n".join(lines))
    if out is not None and len(paths) > 1:
        write_atomic(out / "summary.csv", summary_csv(results).encode())
    if args.json:
        print(json.dumps(results))
    if failures:
        if len(paths) > 1:  # the refusals again, after the progress bar and the results
            print(f"{len(failures)} file(s) failed:", file=sys.stderr)
            for f, msg in failures:
                print(f"  {f}: {msg}", file=sys.stderr)
        return 1 if len(failures) < len(results) else 2
    return 0
