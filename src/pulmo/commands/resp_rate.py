"""``pulmo evaluate|analyze --task resp-rate``: rate scoring of labelled recordings, and
a windowed rate track with heavy-breathing and noise flags for any breath recording."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pulmo.commands import analyze_each


def evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint (bundled by default) on a folder with ``labels.csv`` (path, bpm)."""
    from pulmo.config import default_data_root
    from pulmo.inference.resp_rate import RespRatePipeline, evaluate_folder

    data = Path(args.data) if args.data else default_data_root() / "rrujo"
    pipe = RespRatePipeline.from_checkpoint(args.checkpoint)
    report = evaluate_folder(pipe, data, args.limit, args.split)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['model']} ({report['checkpoint']}, sha256 {report['checkpoint_sha256']}) on {data}")
    print(f"recordings scored: {report['n']} (left out, subjects seen in training/validation: "
          f"{report['excluded_seen_subject_recordings']}; --split all keeps them); rate per recording = {report['aggregate']}")
    print(f"MAE {report['mae']:.2f} bpm  MSE {report['mse']:.2f}  CCC {report['ccc']:.3f}  Pearson {report['pearson']:.3f}  "
          f"bias {report['bias']:+.2f} (LoA ±{report['loa']:.2f})")
    w = report["window"]
    print(f"per window (n={w['n']}): MAE {w['mae']:.2f} bpm  CCC {w['ccc']:.3f}  Pearson {w['pearson']:.3f}")
    for dev, s in report["per_device"].items():
        print(f"  {dev:12s} n={s['n']:4d}  MAE {s['mae']:.2f}  CCC {s['ccc']:.3f}")
    return 0


def analyze(args: argparse.Namespace) -> int:
    """Print each file's rate track; ``--out`` also writes JSON and a PNG of the track."""
    from pulmo.inference.resp_rate import RespRatePipeline, plot_track

    pipe = RespRatePipeline.from_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    def one(f: str) -> dict[str, Any]:
        samples = pipe.load(f)
        track = pipe.analyze_file(f, samples)
        if out:
            (out / f"{Path(f).stem}.json").write_text(json.dumps(track.to_dict(), indent=2))
            plot_track(track, samples, pipe.clip.sample_rate_hz, out / f"{Path(f).stem}_rate.png")
        return track.to_dict()

    def show(f: str, t: dict[str, Any]) -> None:
        print(f"{f}: {t['rate_bpm']:.1f} breaths/min ({pipe.clip.aggregate} of {len(t['windows'])} windows of "
              f"{pipe.clip.window_s:g} s); heavy breathing in {100 * t['heavy_fraction']:.0f} % of windows; "
              f"{'NOISY' if t['noisy'] else 'clean'}; model {t['model']['name']} (sha256 {t['model']['sha256']})")
        print(f"  {'start s':>8} {'end s':>7} {'bpm':>6} {'breaths':>7}  {'breathing':9} heavy noisy")
        for w in t["windows"]:
            print(f"  {w['start_s']:8.1f} {w['end_s']:7.1f} {w['rate_bpm']:6.1f} {w['breath_count']:7.2f}  "
                  f"{w['breathing']:9} {'yes' if w['heavy'] else '-':5} {'yes' if w['noisy'] else '-'}")
        if out:
            print(f"  wrote {out / (Path(f).stem + '.json')} and {out / (Path(f).stem + '_rate.png')}")

    return analyze_each(args.files, one, show, args.json)
