"""Chest X-ray inference: image files in, class probabilities, gate verdicts and Grad-CAM out."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pulmo.cxr.checkpoint import build_cxr_model
from pulmo.cxr.duplicates import find_duplicates, leaked
from pulmo.cxr.preprocess import prepare_gray, to_input
from pulmo.cxr.quality import check_quality
from pulmo.cxr.train import predict_proba
from pulmo.data.adapters.image_folder import ImageRecord, load_record_image, read_image_folder
from pulmo.data.image_io import read_image
from pulmo.engine.checkpoint import file_hash, read_checkpoint
from pulmo.errors import DataError
from pulmo.explain.gradcam import grad_cam, overlay
from pulmo.inference.bundled import default_checkpoint
from pulmo.metrics.classification import classification_report


@dataclass
class XrayResult:
    """One image: predicted label, probability per label, quality-gate verdict, overlay file."""

    path: str
    label: str
    probabilities: dict[str, float]
    gates: dict[str, Any]
    overlay: str | None = None
    model: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CxrPipeline:
    """A trained chest X-ray classifier with its preprocessing and quality gates.

    >>> pipe = CxrPipeline.from_checkpoint()                 # the bundled model
    >>> result = pipe.analyze_file("xray.png", overlay_dir="out")
    """

    def __init__(self, bundle: dict[str, Any], checkpoint_path: Path) -> None:
        self.model, self.cfg = build_cxr_model(bundle)
        self.labels: list[str] = list(bundle["labels"])
        self.metrics: dict[str, Any] = bundle.get("metrics", {})
        self.model_info = {"name": bundle["name"], "checkpoint": checkpoint_path.name,
                           "sha256": file_hash(checkpoint_path), "pulmo_version": bundle["pulmo_version"],
                           "git_commit": bundle["git_commit"]}

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None) -> CxrPipeline:
        path = Path(path) if path else default_checkpoint("cxr")
        return cls(read_checkpoint(path), path)

    def probabilities(self, grays: list[np.ndarray]) -> np.ndarray:
        """``(N, K)`` class probabilities for grayscale images ``(H, W)`` in [0, 1]."""
        x = torch.from_numpy(np.stack([prepare_gray(g, self.cfg.image) for g in grays]))[:, None]
        return predict_proba(self.model, x, self.cfg.image)

    def heatmap(self, gray: np.ndarray, class_index: int | None = None) -> np.ndarray:
        """Grad-CAM ``(size_px, size_px)`` in [0, 1] for the model's input made from ``gray``."""
        return grad_cam(self.model, to_input(gray, self.cfg.image), class_index)

    def gradcam_overlay(self, gray: np.ndarray, class_index: int) -> np.ndarray:
        """The Grad-CAM of ``class_index`` over the model's view of ``gray``: ``(S, S, 3)`` uint8 RGB."""
        return overlay(prepare_gray(gray, self.cfg.image), self.heatmap(gray, class_index))

    def analyze_file(self, path: str | Path, overlay_dir: str | Path | None = None) -> XrayResult:
        """Classify one image; with ``overlay_dir``, also write ``<stem>_gradcam.png`` there
        (the Grad-CAM of the predicted class over the model's view of the image)."""
        gray = read_image(path)
        probs = self.probabilities([gray])[0]
        k = int(probs.argmax())
        overlay_png = None
        if overlay_dir is not None:
            out = Path(overlay_dir) / f"{Path(path).stem}_gradcam.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(self.gradcam_overlay(gray, k)).save(out)
            overlay_png = str(out)
        return XrayResult(str(path), self.labels[k], {lab: float(p) for lab, p in zip(self.labels, probs)},
                          check_quality(gray, self.cfg.gates).to_dict(), overlay_png, dict(self.model_info))

    def evaluate_folder(self, root: str | Path, split: str = "all", drop_leaks: bool = True) -> dict[str, Any]:
        """Score a folder-per-class tree (``ROOT/[split/]<class>/*``) whose class folders are
        the model's labels. A ``split`` that the tree does not have falls back to every split
        (said on stderr and in ``split``). When a held-out split is scored and a ``train``
        split exists, scored images with a near-duplicate in ``train`` are dropped (``leaks_dropped``)."""
        root = Path(root)
        try:
            records = read_image_folder(root, split=split)
            used_split = split
        except DataError as err:
            if "no split folder" not in str(err):
                raise
            records = read_image_folder(root, split="all")
            used_split = "all"
            print(f"pulmo: {root} has no {split!r} split folder; scoring every split", file=sys.stderr)
        unknown = sorted({r.label for r in records} - set(self.labels))
        if unknown:
            raise DataError(f"{root}: class folder(s) {unknown} are not among the model's classes {self.labels}")
        grays = [load_record_image(r) for r in records]
        dropped: list[str] = []
        if drop_leaks and used_split not in ("all", "train") and (root / "train").is_dir():
            train = read_image_folder(root, split="train")
            ids = [r.record_id for r in train] + [r.record_id for r in records]
            pairs = find_duplicates(ids, lambda i: load_record_image(train[i]) if i < len(train) else grays[i - len(train)])
            split_of = {**{r.record_id: "train" for r in train}, **{r.record_id: "held_out" for r in records}}
            leaks = leaked(pairs, split_of, "held_out")
            keep = [i for i, r in enumerate(records) if r.record_id not in leaks]
            dropped = sorted(leaks)
            records, grays = [records[i] for i in keep], [grays[i] for i in keep]
        probs = self.probabilities(grays)
        pred = probs.argmax(1).tolist()
        truth = [self.labels.index(r.label) for r in records]
        report = classification_report(truth, pred, self.labels)
        gates = [check_quality(g, self.cfg.gates) for g in grays]
        report.update({
            "model": self.model_info["name"], "checkpoint": self.model_info["checkpoint"],
            "checkpoint_sha256": self.model_info["sha256"], "data": str(root), "split": used_split,
            "leaks_dropped": dropped, "gate_failures": sum(not v.passed for v in gates),
            "per_image": [_row(r, self.labels[p], pr, self.labels) for r, p, pr in zip(records, pred, probs)],
        })
        return report


def _row(rec: ImageRecord, pred: str, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    return {"id": rec.record_id, "label": rec.label, "predicted": pred, **{f"p_{lab}": float(p) for lab, p in zip(labels, probs)}}
