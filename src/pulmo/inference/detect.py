"""Detection inference: a checkpoint's detector run by tiles over whole images, results
as typed objects, a PNG with the boxes drawn, and scoring on a VOC folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

import pulmo
from pulmo.data.adapters.voc_xml import read_voc_folder
from pulmo.data.boxes import BoxRecord
from pulmo.data.remap import apply_mapping
from pulmo.data.xray_image import load_xray, to_display_uint8
from pulmo.detect.checkpoint import build_detector, configs_from_bundle, read_detect_checkpoint
from pulmo.detect.data import PreparedImage, prepare_array
from pulmo.detect.infer import TiledStats, detect_image, detect_split
from pulmo.engine.checkpoint import file_hash
from pulmo.inference.bundled import default_checkpoint
from pulmo.metrics.detection import detection_report

COLOURS = [(255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255), (0, 200, 200)]


@dataclass
class Detection:
    label: str
    score: float
    box_xyxy: tuple[float, float, float, float]


@dataclass
class DetectResult:
    """Detections of one image (original pixels) above the checkpoint's thresholds."""

    path: str
    width: int
    height: int
    detections: list[Detection]
    model: dict[str, str] = field(default_factory=dict)
    image_png: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "width": self.width, "height": self.height, "model": self.model,
                "image_png": self.image_png, "any_anomaly": bool(self.detections),
                "detections": [{"label": d.label, "score": round(d.score, 4), "box_xyxy": [round(v, 1) for v in d.box_xyxy]}
                               for d in self.detections]}


class DetectPipeline:
    """A detect checkpoint ready to run: ``DetectPipeline.from_checkpoint(None)`` loads the
    bundled model."""

    def __init__(self, bundle: dict[str, Any], path: Path) -> None:
        self.bundle = bundle
        self.path = path
        self.labels: list[str] = list(bundle["labels"])
        self.mapping: dict[str, str] = dict(bundle["mapping"])
        self.thresholds = bundle["thresholds"]
        self.data_cfg, self.tiling, self.inference = configs_from_bundle(bundle)
        self.detector = build_detector(bundle)
        self.sha256 = file_hash(path)
        self.model_info: dict[str, str] = {"name": bundle["name"], "checkpoint": path.name, "sha256": self.sha256,
                                           "pulmo_version": pulmo.__version__}

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None) -> DetectPipeline:
        path = Path(path) if path else default_checkpoint("detect")
        return cls(read_detect_checkpoint(path), path)

    def _threshold(self, label: str) -> float:
        t = self.thresholds
        return float(t.get(label, self.inference.score_threshold)) if isinstance(t, dict) else float(t)

    def prepare(self, record: BoxRecord) -> PreparedImage:
        raw = load_xray(record.path, color=self.data_cfg.color)
        image, scale, levels = prepare_array(raw, self.data_cfg, self.tiling)
        if not record.width:
            record = BoxRecord(record.record_id, record.path, raw.shape[1], raw.shape[0], record.boxes_xyxy,
                               record.labels, record.split, record.source)
        index = {c: i for i, c in enumerate(self.labels)}
        return PreparedImage(record, image, scale, levels, record.boxes * scale,
                             np.array([index[lab] for lab in record.labels], dtype=np.int64))

    def detect_file(self, path: str | Path, stats: TiledStats | None = None) -> tuple[DetectResult, np.ndarray, tuple[float, float]]:
        """Detections of one image file, plus the loaded image and its window levels."""
        raw = load_xray(path, color=self.data_cfg.color)
        prep = self.prepare(BoxRecord(Path(path).stem, str(path), raw.shape[1], raw.shape[0]))
        b, s, lab = detect_image(self.detector, prep, self.tiling, self.inference.conf, self.inference.iou, stats=stats,
                                 flip=self.inference.flip_tta == "on")
        dets = [Detection(self.labels[k], float(sc), tuple(float(v) for v in box)) for box, sc, k in zip(b, s, lab)
                if sc >= self._threshold(self.labels[k])]
        dets.sort(key=lambda d: -d.score)
        return DetectResult(str(path), raw.shape[1], raw.shape[0], dets, dict(self.model_info)), raw, prep.levels

    def evaluate_folder(self, root: str | Path, split: str, limit: int = 0, progress: bool = True) -> dict[str, Any]:
        """Tiled inference on every image of a VOC split; whole-image metrics at IoU 0.5
        (a progress bar on stderr with ``progress``)."""
        from tqdm.auto import tqdm

        records = read_voc_folder(root, split)
        records = records[:limit] if limit > 0 else records
        records = apply_mapping(records, self.mapping)
        stats = TiledStats()
        preps = (self.prepare(r) for r in tqdm(records, desc="detecting", unit="image", disable=not progress))
        dets = detect_split(self.detector, preps, self.tiling, self.labels, self.inference.conf, self.inference.iou, stats,
                            flip=self.inference.flip_tta == "on")
        report = detection_report(dets, self.thresholds, classes=self.labels)
        report.pop("image_counts", None)
        return {**report, "model": self.bundle["name"], "checkpoint": self.path.name, "checkpoint_sha256": self.sha256,
                "labels": self.labels, "thresholds": self.thresholds, "split": split, "data": str(root),
                "tiles_per_s": stats.tiles / stats.seconds if stats.seconds else 0.0,
                "images_per_s": stats.images / stats.seconds if stats.seconds else 0.0}


def draw_detections(image: np.ndarray, levels: tuple[float, float], result: DetectResult, out_png: str | Path) -> Path:
    """Write the image (windowed to 8-bit for display) with labelled boxes as a PNG."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    render_detections(image, levels, result).save(out_png)
    return out_png


def render_detections(image: np.ndarray, levels: tuple[float, float], result: DetectResult) -> Image.Image:
    """The image windowed to 8-bit for display, with each detection's box, label and score drawn."""
    canvas = Image.fromarray(to_display_uint8(image, levels))
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 400))
    names = sorted({d.label for d in result.detections})
    for d in result.detections:
        colour = COLOURS[names.index(d.label) % len(COLOURS)]
        draw.rectangle(d.box_xyxy, outline=colour, width=width)
        draw.text((d.box_xyxy[0] + 2, max(0, d.box_xyxy[1] - 12)), f"{d.label} {d.score:.2f}", fill=colour)
    return canvas
