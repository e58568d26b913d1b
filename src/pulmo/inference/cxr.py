"""Chest X-ray inference: image files in, calibrated class probabilities (or "uncertain"),
gate verdicts and Grad-CAM out.

A checkpoint may carry ``metrics["calibration"]`` = ``{"temperature": T, "threshold": t}``
(fitted on validation, :mod:`pulmo.cxr.calibration`): probabilities are ``softmax(logits / T)``
and an image whose top probability is below ``t`` gets the label ``"uncertain"`` (its most likely
class stays in ``predicted``). Without it, ``T = 1`` and nothing is uncertain.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pulmo.cxr.calibration import UNCERTAIN, calibrated_proba, expected_calibration_error
from pulmo.cxr.checkpoint import build_cxr_model
from pulmo.cxr.duplicates import find_duplicates, leaked
from pulmo.cxr.gate import bundled_gate
from pulmo.cxr.preprocess import normalize_tensor, prepare_gray, to_input
from pulmo.cxr.quality import check_quality
from pulmo.cxr.sources import CLASS_MAP
from pulmo.data.adapters.image_folder import ImageRecord, load_record_image, read_image_folder
from pulmo.data.image_io import read_image
from pulmo.engine.checkpoint import file_hash, read_checkpoint
from pulmo.errors import DataError
from pulmo.explain.gradcam import grad_cam, overlay
from pulmo.inference.bundled import default_checkpoint
from pulmo.metrics.classification import classification_report


@dataclass
class XrayResult:
    """One image: ``label`` (a class, or ``"uncertain"`` below the confidence threshold),
    ``predicted`` (the most likely class), calibrated probability per class, ``confidence``
    (the top one), quality-gate verdicts, overlay file."""

    path: str
    label: str
    probabilities: dict[str, float]
    gates: dict[str, Any]
    overlay: str | None = None
    model: dict[str, str] = field(default_factory=dict)
    predicted: str = ""
    confidence: float = 0.0
    threshold: float = 0.0

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
        cal = self.metrics.get("calibration", {})
        self.temperature = float(cal.get("temperature", 1.0))
        self.threshold = float(cal.get("threshold", 0.0))
        self.model_info = {"name": bundle["name"], "checkpoint": checkpoint_path.name,
                           "sha256": file_hash(checkpoint_path), "pulmo_version": bundle["pulmo_version"],
                           "git_commit": bundle["git_commit"]}

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None) -> CxrPipeline:
        path = Path(path) if path else default_checkpoint("cxr")
        return cls(read_checkpoint(path), path)

    @torch.no_grad()
    def logits(self, grays: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """``(N, K)`` raw logits for grayscale images ``(H, W)`` in [0, 1]."""
        out = [np.zeros((0, len(self.labels)), np.float32)]
        for i in range(0, len(grays), batch_size):
            x = torch.from_numpy(np.stack([prepare_gray(g, self.cfg.image) for g in grays[i:i + batch_size]]))[:, None]
            out.append(self.model(normalize_tensor(x, self.cfg.image)).numpy())
        return np.concatenate(out)

    def probabilities(self, grays: list[np.ndarray]) -> np.ndarray:
        """``(N, K)`` calibrated class probabilities (``softmax(logits / temperature)``)."""
        return calibrated_proba(self.logits(grays), self.temperature)

    def decide(self, probs: np.ndarray) -> list[str]:
        """Label per row of ``probs (N, K)``: the top class, or ``"uncertain"`` below the threshold."""
        return [UNCERTAIN if p.max() < self.threshold else self.labels[int(p.argmax())] for p in probs]

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
        gates = check_quality(gray, self.cfg.gates).to_dict()
        gate = bundled_gate()
        if gate is not None:
            gates["chest_xray"] = gate.score(gray).accepted
        overlay_png = None
        if overlay_dir is not None:
            out = Path(overlay_dir) / f"{Path(path).stem}_gradcam.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(self.gradcam_overlay(gray, k)).save(out)
            overlay_png = str(out)
        return XrayResult(str(path), self.decide(probs[None])[0], {lab: float(p) for lab, p in zip(self.labels, probs)},
                          gates, overlay_png, dict(self.model_info), self.labels[k], float(probs[k]), self.threshold)

    def evaluate_folder(self, root: str | Path, split: str = "all", drop_leaks: bool = True) -> dict[str, Any]:
        """Score a folder-per-class tree (``ROOT/[split/]<class>/*``) whose class folders are
        the model's labels (``Pneumonia`` and ``Bacterial Pneumonia`` folders score against
        ``Viral Pneumonia``, which means pneumonia that is not COVID-19). A ``split`` that the tree
        does not have falls back to every split (said on stderr and in ``split``). When a held-out
        split is scored and a ``train`` split exists, scored images with a near-duplicate in
        ``train`` are dropped (``leaks_dropped``).

        ``accuracy``, ``macro_f1`` and the per-class figures score the most likely class of every
        image. Images the chest X-ray gate refuses are counted and listed (``gate_refused``) and
        get no answer in the selective figures: ``abstention_rate`` is the share of gate-accepted
        images called "uncertain", ``selective_macro_f1`` the macro-F1 (classes present) on the
        gate-accepted images that are not; ``ece`` is the calibrated probabilities' expected
        calibration error over every image. Each is None (JSON null) where it is undefined
        (no image accepted, none answered)."""
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
        records = [replace(r, label=CLASS_MAP[r.label]) if r.label not in self.labels and CLASS_MAP.get(r.label)
                   in self.labels else r for r in records]
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
        gate = bundled_gate()
        chest = [gate.score(g).accepted if gate is not None else True for g in grays]
        decided = self.decide(probs)
        answered = [i for i, (ok, d) in enumerate(zip(chest, decided)) if ok and d != UNCERTAIN]
        accepted = sum(chest)
        y = np.asarray(truth)
        report.update({
            "model": self.model_info["name"], "checkpoint": self.model_info["checkpoint"],
            "checkpoint_sha256": self.model_info["sha256"], "data": str(root), "split": used_split,
            "leaks_dropped": dropped, "gate_failures": sum(not v.passed for v in gates),
            "gate_refused": [r.record_id for r, ok in zip(records, chest) if not ok],
            "n_gate_refused": len(chest) - accepted,
            "temperature": self.temperature, "uncertain_below": self.threshold,
            "ece": expected_calibration_error(probs, y) if len(y) else None,  # None (JSON null): undefined
            "abstention_rate": (accepted - len(answered)) / accepted if accepted else None,
            "selective_macro_f1": _macro_f1(y[answered], np.asarray(pred)[answered]) if answered else None,
            "n_answered": len(answered),
            "per_image": [_row(r, self.labels[p], pr, self.labels, d, ok)
                          for r, p, pr, d, ok in zip(records, pred, probs, decided, chest)],
        })
        return report


def _macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in ``truth``."""
    from sklearn.metrics import f1_score

    return float(f1_score(truth, pred, labels=sorted(set(truth.tolist())), average="macro", zero_division=0))


def _row(rec: ImageRecord, pred: str, probs: np.ndarray, labels: list[str], decided: str, chest: bool) -> dict[str, Any]:
    return {"id": rec.record_id, "label": rec.label, "predicted": pred, "answer": decided if chest else "refused",
            "chest_gate": chest, **{f"p_{lab}": float(p) for lab, p in zip(labels, probs)}}
