"""``pulmo evaluate --task detect``: tiled X-ray anomaly detection scored on a VOC split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pulmo.catalog import model_header


def evaluate(args: argparse.Namespace) -> int:
    """Tiled inference on the whole images of a VOC split; P/R/F1 at IoU 0.5."""
    from pulmo.config import default_data_root
    from pulmo.export import use_runtime
    from pulmo.inference.detect import DetectPipeline

    data = Path(args.data) if args.data else default_data_root() / "xray_det"
    runtime = getattr(args, "runtime", "torch")
    pipe = use_runtime("detect", DetectPipeline.from_checkpoint(args.checkpoint), args.checkpoint, runtime)
    report = {**pipe.evaluate_folder(data, args.split, args.limit, progress=not args.json), "runtime": runtime}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{model_header(report)} on {data} [{args.split}], "
          f"runtime {runtime}")
    print(f"images: {report['n']}; classes {report['labels']}; thresholds {report['thresholds']}")
    print(f"precision {report['precision']:.4f}  recall {report['recall']:.4f}  F1 {report['f1']:.4f}  "
          f"(IoU {report['iou_threshold']}, TP {report['tp']} FP {report['fp']} FN {report['fn']}); mAP50 {report['map50']:.4f}")
    se, sp = report["image_sensitivity"], report["image_specificity"]
    print(f"any-anomaly per image: sensitivity {'n/a' if se is None else f'{se:.4f}'}  "
          f"specificity {'n/a (no image without objects)' if sp is None else f'{sp:.4f}'}")
    for c, m in report["per_class"].items():
        print(f"  {c:16s} P {m['precision']:.4f} R {m['recall']:.4f} F1 {m['f1']:.4f} (TP {m['tp']} FP {m['fp']} FN {m['fn']})")
    print(f"throughput: {report['tiles_per_s']:.1f} tiles/s, {report['images_per_s']:.2f} images/s")
    return 0
