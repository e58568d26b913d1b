"""``pulmo evaluate --task cxr``: chest X-ray scoring on a folder-per-class tree."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pulmo.catalog import model_header


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint (bundled by default) on a folder-per-class tree."""
    from pulmo.config import default_data_root
    from pulmo.export import use_runtime
    from pulmo.inference.cxr import CxrPipeline

    if args.data:
        data, split = Path(args.data), args.split
    else:  # the shared 3-class set: its held-out split is ``val``
        data, split = default_data_root() / "cxr" / "covid19_3class", "val" if args.split == "test" else args.split
    runtime = getattr(args, "runtime", "torch")
    pipe = use_runtime("cxr", CxrPipeline.from_checkpoint(args.checkpoint), args.checkpoint, runtime)
    report = pipe.evaluate_folder(data, split)
    report.pop("per_image")
    report["runtime"] = runtime
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{model_header(report)} on {data} [{report['split']}]")
    print(f"images scored: {report['n']} (near-duplicates of train dropped: {len(report['leaks_dropped'])}; "
          f"failing a quality gate, still scored: {report['gate_failures']})")
    print(f"refused by the chest X-ray gate (not a frontal chest X-ray; scored above, given no answer below): "
          f"{report['n_gate_refused']}" + (f": {', '.join(report['gate_refused'])}" if report["gate_refused"] else ""))
    print(f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  (most likely class of every image)")
    print(f"'uncertain' (calibrated confidence < {report['uncertain_below']:.3f}): abstention rate "
          f"{_fmt(report['abstention_rate'])}; macro-F1 on the {report['n_answered']} images answered: "
          f"{_fmt(report['selective_macro_f1'])}; ECE {_fmt(report['ece'])} (temperature {report['temperature']:.3f})")
    for lab in report["labels"]:
        print(f"  {lab:16s} n={report['support'][lab]:4d}  P {report['precision'][lab]:.4f}  "
              f"R {report['recall'][lab]:.4f}  F1 {report['f1'][lab]:.4f}")
    print("confusion matrix (rows true, columns predicted):", report["labels"])
    for lab, row in zip(report["labels"], report["confusion_matrix"]):
        print(f"  {lab:16s} {row}")
    return 0
