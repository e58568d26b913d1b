"""``pulmo evaluate --task lung-sounds``: ICBHI scoring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pulmo.catalog import model_header


def evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint (bundled by default) on a dataset folder."""
    from pulmo.config import default_data_root
    from pulmo.export import use_runtime
    from pulmo.inference.lung_sounds import LungSoundPipeline, evaluate_icbhi

    data = Path(args.data) if args.data else default_data_root() / "icbhi"
    runtime = getattr(args, "runtime", "torch")
    pipe = use_runtime("lung-sounds", LungSoundPipeline.from_checkpoint(args.checkpoint), args.checkpoint, runtime)
    report = evaluate_icbhi(pipe, data, args.split, args.limit, args.strict, progress=not args.json, cycles_out=args.cycles_out)
    report["runtime"] = runtime
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{model_header(report)} on {data} [{args.split}]")
        print(f"cycles scored: {report['n']} (without audio, not scored: {report['cycles_without_audio']})")
        print(f"sensitivity {report['sensitivity']:.4f}  specificity {report['specificity']:.4f}  score {report['score']:.4f}")
        for dev, s in report["per_device"].items():
            print(f"  {dev:10s} n={s['n']:5d}  Se {s['sensitivity']:.4f}  Sp {s['specificity']:.4f}  score {s['score']:.4f}")
        print("confusion matrix (rows true, columns predicted):", report["labels"])
        for lab, row in zip(report["labels"], report["confusion_matrix"]):
            print(f"  {lab:8s} {row}")
    return 0
