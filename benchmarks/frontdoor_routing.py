"""Where the front door sends every real file of the shared data, and what it refuses.

    python benchmarks/frontdoor_routing.py [--data DIR] [--out results/frontdoor_routing.md]

Runs :func:`pulmo.frontdoor.routing.route_file` (header checks, content measurements, chest
X-ray gate; no model) on every recording of ICBHI (whole recordings and single-cycle files),
KAUH and RRuJO, every chest X-ray (covid19_3class, adult_multisource) and every SIXray baggage
image, and counts the routes and refusals per set. Writes ``results/frontdoor_routing.md|csv``.
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tqdm import tqdm  # noqa: E402

from pulmo.config import default_data_root  # noqa: E402
from pulmo.frontdoor.inputs import InputRejected, Limits, inspect_file  # noqa: E402
from pulmo.frontdoor.routing import route_file  # noqa: E402

SETS = {
    "ICBHI whole recordings": "icbhi/audio/*.flac",
    "ICBHI single-cycle files": "icbhi/cycles/*.flac",
    "KAUH (Littmann 3200, 3 filter modes)": "kauh/audio/*/*.flac",
    "RRuJO RRinervasO (ESP32 + Littmann bell, 4.5 kHz)": "rrujo/audio/RRinervasO/*/*.flac",
    "RRuJO ThinklabsO (2 or 4 kHz)": "rrujo/audio/ThinklabsO/*/*.flac",
    "chest X-rays, covid19_3class": "cxr/covid19_3class/*/*/*",
    "chest X-rays, adult_multisource": "cxr/adult_multisource/*/*.png",
    "SIXray baggage X-rays (colour)": "xray_det/sixray_subset/*/images/*.jpg",
}


def outcome(path: Path) -> str:
    """``runs: lung-sounds+resp-rate`` or ``refused: <code>`` for one file."""
    try:
        route = route_file(path, inspect_file(path, Limits()))
    except InputRejected as err:
        return f"refused: {err.code}"
    return "runs: " + "+".join(route.tasks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="data root (default $PULMO_DATA or ../shared/data)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "frontdoor_routing.md")
    args = ap.parse_args(argv)
    data = args.data or default_data_root()
    counts: dict[str, collections.Counter[str]] = {}
    for name, pattern in SETS.items():
        files = sorted(data.glob(pattern))
        if not files:
            print(f"skipping {name}: nothing at {pattern} under the data root", file=sys.stderr)
            continue
        counts[name] = collections.Counter(outcome(f) for f in tqdm(files, desc=name, file=sys.stderr, leave=False))
    outcomes = sorted({o for c in counts.values() for o in c})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.with_suffix(".csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", "n", *outcomes])
        for name, c in counts.items():
            w.writerow([name, sum(c.values()), *[c.get(o, 0) for o in outcomes]])
    lines = ["# Front-door routing on the shared real data", "",
             "`python benchmarks/frontdoor_routing.py` (no model runs: header checks, content measurements and the "
             "chest X-ray gate only). Each cell counts files.", "",
             "| set | n | " + " | ".join(outcomes) + " |", "|---|---:|" + "---:|" * len(outcomes)]
    lines += [f"| {name} | {sum(c.values())} | " + " | ".join(str(c.get(o, 0)) for o in outcomes) + " |"
              for name, c in counts.items()]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
