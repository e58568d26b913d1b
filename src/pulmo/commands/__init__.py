"""Command-line handlers, one module per capability (``evaluate(args)``, ``analyze(args)``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pulmo.errors import PulmoError


def analyze_each(files: Sequence[str], analyze_one: Callable[[str], dict[str, Any]],
                 show: Callable[[str, dict[str, Any]], None], as_json: bool) -> int:
    """Run ``analyze_one`` on every file, keeping going past files it refuses (``PulmoError``).

    ``show(file, result)`` prints a readable summary unless ``as_json``, where one JSON list of
    the results is printed at the end. Failures are listed on stderr. Returns the exit status:
    0 all done, 1 some failed, 2 all failed.
    """
    results, failures = [], []
    for f in files:
        try:
            result = analyze_one(f)
        except PulmoError as err:
            failures.append(f)
            print(f"pulmo: skipped {f}: {err}", file=sys.stderr)
            continue
        results.append(result)
        if not as_json:
            show(f, result)
    if as_json:
        print(json.dumps(results))
    if failures:
        print(f"{len(failures)} file(s) failed: " + "; ".join(failures), file=sys.stderr)
        return 1 if results else 2
    return 0
