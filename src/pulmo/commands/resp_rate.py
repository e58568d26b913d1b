"""``pulmo evaluate --task resp-rate``: rate scoring of labelled recordings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pulmo.catalog import model_header


def evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint (bundled by default) on a folder with ``labels.csv`` (path, bpm)."""
    from pulmo.config import default_data_root
    from pulmo.export import use_runtime
    from pulmo.inference.bundled import resp_rate_short_checkpoint
    from pulmo.inference.resp_rate import RespRatePipeline, evaluate_folder

    data = Path(args.data) if args.data else default_data_root() / "rrujo"
    runtime = getattr(args, "runtime", "torch")
    pipe = use_runtime("resp-rate", RespRatePipeline.from_checkpoint(args.checkpoint), args.checkpoint, runtime)
    short_path = resp_rate_short_checkpoint()  # takes recordings too short for the bundled default
    short = (use_runtime("resp-rate", RespRatePipeline.from_checkpoint(short_path), short_path, runtime)
             if args.checkpoint is None and short_path else None)
    report = {**evaluate_folder(pipe, data, args.limit, args.split, short, progress=not args.json), "runtime": runtime}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{model_header(report)} on {data}, runtime {runtime}")
    print(f"recordings scored: {report['n']} (left out, subjects seen in training/validation: "
          f"{report['excluded_seen_subject_recordings']}; --split all keeps them)")
    print(f"model: {report['model_line']}; front end per recording: "
          + ", ".join(f"{k} {v}" for k, v in report["front_end"].items()))
    print(f"MAE {report['mae']:.2f} bpm  MSE {report['mse']:.2f}  CCC {report['ccc']:.3f}  Pearson {report['pearson']:.3f}  "
          f"bias {report['bias']:+.2f} (LoA ±{report['loa']:.2f})")
    w = report["window"]
    print(f"per window (n={w['n']}): MAE {w['mae']:.2f} bpm  CCC {w['ccc']:.3f}  Pearson {w['pearson']:.3f}")
    doubt = report.get("uncertain")
    if doubt:
        line = f"flagged uncertain (possible octave slip): {doubt['n_flagged']} of {report['n']} recordings"
        if doubt["confident"]:
            c = doubt["confident"]
            line += f"; the others: MAE {c['mae']:.2f} bpm  CCC {c['ccc']:.3f}"
        if doubt["flagged"]:
            line += f"; the flagged: MAE {doubt['flagged']['mae']:.2f} bpm"
        print(line)
    for dev, s in report["per_device"].items():
        print(f"  {dev:12s} n={s['n']:4d}  MAE {s['mae']:.2f}  CCC {s['ccc']:.3f}")
    if len(report.get("per_model", {})) > 1 or set(report.get("per_model", {})) - {report["checkpoint"]}:
        print("recordings too short for the default model were scored by the short-clip model:")
        for m, s in report["per_model"].items():
            print(f"  {m:28s} n={s['n']:4d}  MAE {s['mae']:.2f}  CCC {s['ccc']:.3f}")
    return 0
