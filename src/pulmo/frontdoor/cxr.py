"""Chest X-ray at the front door: class probabilities, quality-gate verdicts and a Grad-CAM overlay."""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulmo.frontdoor.capabilities import (CAPABILITIES, Analysis, Figure, PipelineCache, Table, check_options,
                                         trivial_rule_warnings)

if TYPE_CHECKING:  # torch is imported on first use, so listing capabilities stays light
    from pulmo.inference.cxr import CxrPipeline


class CxrCapability:
    """Adapter from :class:`CxrPipeline` to the front door. Grad-CAM hooks the shared model,
    so overlays are drawn one at a time."""

    name = "cxr"
    kinds = frozenset({"image"})
    options: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.pipelines = PipelineCache(self.name, _load_pipeline)
        self._cam_lock = threading.Lock()

    def analyze(self, path: Path, checkpoint: str | None = None, options: Mapping[str, Any] | None = None) -> Analysis:
        """Normal / COVID-19 / pneumonia probabilities, the quality gates' verdict (blur,
        contrast) and the Grad-CAM of the predicted class over the model's view of the image."""
        check_options(self.name, self.options, options)
        pipe, checkpoint_sha256 = self.pipelines.get(checkpoint)
        from PIL import Image

        from pulmo.data.image_io import read_image

        res = pipe.analyze_file(path)
        result = res.to_dict()
        for key in ("path", "overlay"):  # the envelope names the input; the figure carries the overlay
            result.pop(key, None)
        result["model"]["sha256"] = checkpoint_sha256
        result["model"]["evaluation"] = evaluation_text(pipe.metrics)
        gates = res.gates
        verdict = "passes the quality gates" if gates.get("passed", True) else "FAILS the quality gates"
        if res.label == "uncertain":
            headline = (f"uncertain: the model is not confident enough to name a class (most likely {res.predicted}, "
                        f"{res.confidence:.0%}, below the {res.threshold:.0%} threshold); image {verdict}")
        else:
            headline = f"{res.label} ({res.confidence:.0%}); image {verdict}"
        table = Table(columns=["class", "probability"],
                      rows=[[k, round(v, 4)] for k, v in sorted(res.probabilities.items(), key=lambda kv: -kv[1])])
        k = pipe.labels.index(res.predicted)
        with self._cam_lock:
            rgb = pipe.gradcam_overlay(read_image(path), k)
        png = io.BytesIO()
        Image.fromarray(rgb).save(png, format="PNG")
        figure = Figure("gradcam", png.getvalue(), f"Grad-CAM of '{res.predicted}' over the model's view of the X-ray "
                        "(red: regions that raised that class's score most).")
        return Analysis(self.name, headline, result, table, [figure], reliability_warnings(pipe.metrics, len(pipe.labels)))


def reliability_warnings(metrics: Mapping[str, Any], classes: int) -> list[str]:
    """A warning where the model's stored leave-one-source-out macro-F1 (pooled over held-out
    sources) is no better than guessing each class in proportion to its frequency, which scores
    ``1 / classes`` (each class's precision and recall are its frequency)."""
    pooled = metrics.get("loso", {}).get("pooled_macro_f1")
    return trivial_rule_warnings(None if pooled is None else pooled[0], 1 / classes,
                                 "this chest X-ray model's macro-F1 on X-ray sources it never saw (leave-one-source-out) is",
                                 "guessing in proportion to the classes", "class for an image from a new hospital")


def evaluation_text(metrics: Mapping[str, Any]) -> str:
    """One sentence on how the model was measured, from its checkpoint's metrics."""
    loso = metrics.get("loso", {})
    if loso:
        f = {k: v[0] for k, v in loso.items()}
        return (f"leave-one-source-out over 5 X-ray sources (each scored by a model that never saw it): macro-F1 "
                f"{f['pooled_macro_f1']:.2f} pooled, {f['adult_macro_f1']:.2f} on the adult sources, worst source "
                f"{f['worst_source_macro_f1']:.2f}; 'uncertain' on {f['abstention_rate']:.0%} of them. 'Viral Pneumonia' "
                "means pneumonia that is not COVID-19 (viral or bacterial). Not a diagnosis.")
    val = metrics.get("val", {})
    if {"accuracy", "macro_f1"} <= set(val):
        return (f"COVID-19 3-class validation split without leaked duplicates (paediatric normal and viral images, "
                f"adult COVID images): accuracy {val['accuracy']:.2f}, macro-F1 {val['macro_f1']:.2f}; not yet "
                "measured on adult non-COVID X-rays")
    return "not measured"


def _load_pipeline(checkpoint: str | None) -> CxrPipeline:
    from pulmo.inference.cxr import CxrPipeline

    return CxrPipeline.from_checkpoint(checkpoint)


CAPABILITIES.add(CxrCapability.name, CxrCapability())

__all__ = ["CxrCapability", "evaluation_text", "reliability_warnings"]
