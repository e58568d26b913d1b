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


def analyze_files(args: argparse.Namespace) -> int:
    """Exit status: 0 all analysed, 1 some refused or failed, 2 none analysed (a usage error
    raises :class:`PulmoError` before any file is read)."""
    from pulmo.frontdoor.capabilities import analyze_path
    from pulmo.frontdoor.report import write_outputs

    paths = expand(args.files)
    options = {"annotation": getattr(args, "annotation", None), "unannotated": getattr(args, "unannotated", None)}
    out = Path(args.out) if args.out else None
    if out is not None:
        writable_out(out)
    results, failures = [], []
    bar = tqdm(list(zip(paths, unique_stems(paths))), desc="analysing", unit="file", file=sys.stderr,
               disable=len(paths) < 2 or args.json)
    for path, stem in bar:
        try:
            result, analysis = analyze_path(path, args.task, args.checkpoint, options)
        except (PulmoError, OSError) as err:
            if isinstance(err, OSError) and not _is_input_error(err, path):
                raise
            failures.append((str(path), refusal(path, err)))
            tqdm.write(f"pulmo: skipped {path}: {failures[-1][1]}", file=sys.stderr)
            continue
        result["input"]["path"] = str(path)  # which file, where names repeat across folders
        results.append(result)
        written = write_outputs(out, stem, result, {f.name: f.png for f in analysis.figures}) if out else []
        if not args.json:
            model = result["model"]
            lines = [f"{path}: {result['headline']}",
                     f"  {result['task']} model {model['name']} ({model['checkpoint']}, sha256 {model['sha256']}, "
                     f"pulmo {result['pulmo_version']})", *format_table(result["table"])]
            if written:
                lines.append(f"  report: {written[1]}")
            tqdm.write("\n".join(lines))
    if args.json:
        print(json.dumps(results))
    if failures:
        if len(paths) > 1:  # the refusals again, after the progress bar and the results
            print(f"{len(failures)} file(s) failed:", file=sys.stderr)
            for f, msg in failures:
                print(f"  {f}: {msg}", file=sys.stderr)
        return 1 if results else 2
    return 0
