"""``pulmo evaluate|analyze --task lung-sounds``: ICBHI scoring and cycle-by-cycle classification."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pulmo.errors import PulmoError


def evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint (bundled by default) on a dataset folder."""
    from pulmo.config import default_data_root
    from pulmo.inference.lung_sounds import LungSoundPipeline, evaluate_icbhi

    data = Path(args.data) if args.data else default_data_root() / "icbhi"
    pipe = LungSoundPipeline.from_checkpoint(args.checkpoint)
    report = evaluate_icbhi(pipe, data, args.split, args.limit, args.strict, progress=not args.json, cycles_out=args.cycles_out)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['model']} ({report['checkpoint']}, sha256 {report['checkpoint_sha256']}) on {data} [{args.split}]")
        print(f"cycles scored: {report['n']} (without audio, not scored: {report['cycles_without_audio']})")
        print(f"sensitivity {report['sensitivity']:.4f}  specificity {report['specificity']:.4f}  score {report['score']:.4f}")
        for dev, s in report["per_device"].items():
            print(f"  {dev:10s} n={s['n']:5d}  Se {s['sensitivity']:.4f}  Sp {s['specificity']:.4f}  score {s['score']:.4f}")
        print("confusion matrix (rows true, columns predicted):", report["labels"])
        for lab, row in zip(report["labels"], report["confusion_matrix"]):
            print(f"  {lab:8s} {row}")
    return 0


def analyze(args: argparse.Namespace) -> int:
    """Classify each cycle of each recording; keep going past bad files."""
    from pulmo.inference.lung_sounds import LungSoundPipeline

    pipe = LungSoundPipeline.from_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    for f in args.files:
        try:
            res = pipe.analyze_file(f, annotation=args.annotation, unannotated=args.unannotated)
        except PulmoError as err:
            failures.append((f, str(err)))
            print(f"pulmo: skipped {f}: {err}", file=sys.stderr)
            continue
        results.append(res.to_dict())
        if out:
            (out / f"{Path(f).stem}.json").write_text(json.dumps(res.to_dict(), indent=2))
        if not args.json:
            print(f"{f}: {len(res.cycles)} cycles from {res.segmentation}; model {res.model['name']} "
                  f"(sha256 {res.model['sha256']}, pulmo {res.model['pulmo_version']})")
            print(f"  {'start s':>8} {'end s':>7}  {'predicted':9} " + " ".join(f"{k:>8}" for k in pipe.labels) + "  annotated")
            for c in res.cycles:
                probs = " ".join(f"{c.probabilities[k]:8.3f}" for k in pipe.labels)
                print(f"  {c.start_s:8.2f} {c.end_s:7.2f}  {c.label:9} {probs}  {c.annotated_label or '-'}")
    if args.json:
        print(json.dumps(results))
    if failures:
        print(f"{len(failures)} file(s) failed: " + "; ".join(f for f, _ in failures), file=sys.stderr)
        return 1 if results else 2
    return 0
