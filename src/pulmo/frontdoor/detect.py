"""X-ray anomaly detection at the front door: boxes on the whole scan after tiled inference."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulmo.frontdoor.capabilities import CAPABILITIES, Analysis, Figure, PipelineCache, Table, check_options

if TYPE_CHECKING:  # torch and the detector engine are imported on first use
    from pulmo.inference.detect import DetectPipeline


class DetectCapability:
    """Adapter from :class:`DetectPipeline` to the front door (needs the ``detect`` extra)."""

    name = "detect"
    kinds = frozenset({"image"})
    options: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.pipelines = PipelineCache(self.name, _load_pipeline)

    def analyze(self, path: Path, checkpoint: str | None = None, options: Mapping[str, Any] | None = None) -> Analysis:
        """Objects found on the whole image (tiled inference, merged across tile seams), each
        above the checkpoint's per-class threshold, with the scan and its boxes as a figure."""
        check_options(self.name, self.options, options)
        pipe, checkpoint_sha256 = self.pipelines.get(checkpoint)
        res, image, levels = pipe.detect_file(path)
        result = res.to_dict()
        for key in ("path", "image_png"):  # the envelope names the input; the figure carries the drawing
            result.pop(key, None)
        result["model"]["sha256"] = checkpoint_sha256
        test = pipe.bundle.get("metrics", {}).get("test", {})
        if {"precision", "recall", "f1"} <= set(test):
            result["model"]["evaluation"] = (
                f"baggage X-ray test split (n={test.get('n', '?')} images, whole images after tiled inference): "
                f"precision {test['precision']:.2f}, recall {test['recall']:.2f}, F1 {test['f1']:.2f} at IoU 0.5")
        found = len(res.detections)
        headline = (f"{found} object(s) found on the {res.width}x{res.height} image" if found
                    else f"no object found on the {res.width}x{res.height} image")
        table = Table(columns=["label", "score", "x0", "y0", "x1", "y1"],
                      rows=[[d.label, round(d.score, 3), *[round(v, 1) for v in d.box_xyxy]] for d in res.detections])
        from pulmo.inference.detect import render_detections

        png = io.BytesIO()
        render_detections(image, levels, res).save(png, format="PNG")
        figure = Figure("boxes", png.getvalue(), "The scan, windowed to 8-bit for display, with each detection's box, "
                        "label and score.")
        return Analysis(self.name, headline, result, table, [figure])


def _load_pipeline(checkpoint: str | None) -> DetectPipeline:
    from pulmo.inference.detect import DetectPipeline

    return DetectPipeline.from_checkpoint(checkpoint)


CAPABILITIES.add(DetectCapability.name, DetectCapability())

__all__ = ["DetectCapability"]
