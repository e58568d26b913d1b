"""``pulmo evaluate|analyze --task resp-rate``: rate scoring of labelled recordings, and
a windowed rate track with heavy-breathing and noise flags for any breath recording."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pulmo.errors import PulmoError


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
    results, failures = [], []
    for f in args.files:
        try:
            samples = pipe.load(f)
            track = pipe.analyze_file(f, samples)
        except PulmoError as err:
            failures.append(f)
            print(f"pulmo: skipped {f}: {err}", file=sys.stderr)
            continue
        results.append(track.to_dict())
        if out:
            (out / f"{Path(f).stem}.json").write_text(json.dumps(track.to_dict(), indent=2))
            plot_track(track, samples, pipe.clip.sample_rate_hz, out / f"{Path(f).stem}_rate.png")
        if not args.json:
            print(f"{f}: {track.rate_bpm:.1f} breaths/min ({pipe.clip.aggregate} of {len(track.windows)} windows of "
                  f"{pipe.clip.window_s:g} s); heavy breathing in {100 * track.heavy_fraction:.0f} % of windows; "
                  f"{'NOISY' if track.noisy else 'clean'}; model {track.model['name']} (sha256 {track.model['sha256']})")
            print(f"  {'start s':>8} {'end s':>7} {'bpm':>6} {'breaths':>7}  {'breathing':9} heavy noisy")
            for w in track.windows:
                print(f"  {w.start_s:8.1f} {w.end_s:7.1f} {w.rate_bpm:6.1f} {w.breath_count:7.2f}  {w.breathing:9} "
                      f"{'yes' if w.heavy else '-':5} {'yes' if w.noisy else '-'}")
            if out:
                print(f"  wrote {out / (Path(f).stem + '.json')} and {out / (Path(f).stem + '_rate.png')}")
    if args.json:
        print(json.dumps(results))
    if failures:
        print(f"{len(failures)} file(s) failed: " + "; ".join(failures), file=sys.stderr)
        return 1 if results else 2
    return 0
