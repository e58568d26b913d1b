"""``pulmo evaluate|analyze --task cxr``: chest X-ray scoring and single-image analysis."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pulmo.commands import analyze_each


def evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint (bundled by default) on a folder-per-class tree."""
    from pulmo.config import default_data_root
    from pulmo.inference.cxr import CxrPipeline

    if args.data:
        data, split = Path(args.data), args.split
    else:  # the shared 3-class set: its held-out split is ``val``
        data, split = default_data_root() / "cxr" / "covid19_3class", "val" if args.split == "test" else args.split
    pipe = CxrPipeline.from_checkpoint(args.checkpoint)
    report = pipe.evaluate_folder(data, split)
    report.pop("per_image")
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['model']} ({report['checkpoint']}, sha256 {report['checkpoint_sha256']}) on {data} [{report['split']}]")
    print(f"images scored: {report['n']} (near-duplicates of train dropped: {len(report['leaks_dropped'])}; "
          f"failing a quality gate, still scored: {report['gate_failures']})")
    print(f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}")
    for lab in report["labels"]:
        print(f"  {lab:16s} n={report['support'][lab]:4d}  P {report['precision'][lab]:.4f}  "
              f"R {report['recall'][lab]:.4f}  F1 {report['f1'][lab]:.4f}")
    print("confusion matrix (rows true, columns predicted):", report["labels"])
    for lab, row in zip(report["labels"], report["confusion_matrix"]):
        print(f"  {lab:16s} {row}")
    return 0


def analyze(args: argparse.Namespace) -> int:
    """Classify each image, print probabilities and gate verdicts; ``--out`` writes JSON and
    the Grad-CAM overlay PNG per image. Keeps going past bad files."""
    from pulmo.inference.cxr import CxrPipeline

    pipe = CxrPipeline.from_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else None

    def one(f: str) -> dict[str, Any]:
        res = pipe.analyze_file(f, overlay_dir=out)
        if out:
            (out / f"{Path(f).stem}.json").write_text(json.dumps(res.to_dict(), indent=2))
        return res.to_dict()

    def show(f: str, r: dict[str, Any]) -> None:
        print(f"{f}: {r['label']}  (model {r['model']['name']}, sha256 {r['model']['sha256']})")
        print("  " + "  ".join(f"{k} {v:.3f}" for k, v in r["probabilities"].items()))
        g = r["gates"]
        verdict = "passed" if g["passed"] else "FAILED: " + "; ".join(g["reasons"])
        print(f"  quality gates {verdict} (variance of Laplacian {g['laplacian_var']:.1f}, "
              f"gray-level std {g['contrast_std']:.1f})")
        if r["overlay"]:
            print(f"  Grad-CAM overlay: {r['overlay']}")

    return analyze_each(args.files, one, show, args.json)
