"""COCO detection JSON <-> :class:`~pulmo.data.boxes.BoxRecord` (boxes ``[x, y, w, h]``)."""

from __future__ import annotations

import json
from pathlib import Path

from pulmo.data.boxes import BoxRecord
from pulmo.errors import DataError


def read_coco_json(json_path: str | Path, image_root: str | Path | None = None, split: str = "") -> list[BoxRecord]:
    """All images of a COCO file; ``file_name`` is resolved against ``image_root``
    (default: the JSON file's folder)."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
        cats = {c["id"]: c["name"] for c in data["categories"]}
        images = data["images"]
        anns = data.get("annotations", [])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"cannot read COCO file {json_path}: {err}") from None
    root = Path(image_root) if image_root else json_path.parent
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    out = []
    for im in images:
        boxes, labels = [], []
        for a in by_image.get(im["id"], []):
            x, y, w, h = map(float, a["bbox"])
            if a.get("category_id") not in cats:
                raise DataError(f"{json_path}: annotation {a.get('id')} has unknown category {a.get('category_id')}")
            boxes.append((x, y, x + w, y + h))
            labels.append(cats[a["category_id"]])
        out.append(BoxRecord(record_id=Path(im["file_name"]).stem, path=str(root / im["file_name"]),
                             width=int(im.get("width", 0)), height=int(im.get("height", 0)),
                             boxes_xyxy=tuple(boxes), labels=tuple(labels), split=split, source="coco"))
    return out


def write_coco_json(records: list[BoxRecord], json_path: str | Path, class_names: list[str] | None = None) -> Path:
    """Write records as one COCO file; category ids follow ``class_names`` (1-based)."""
    names = class_names or sorted({lab for r in records for lab in r.labels})
    cat_id = {c: i + 1 for i, c in enumerate(names)}
    images, anns = [], []
    for i, r in enumerate(records, 1):
        images.append({"id": i, "file_name": Path(r.path).name, "width": r.width, "height": r.height})
        for (x0, y0, x1, y1), lab in zip(r.boxes_xyxy, r.labels):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat_id[lab],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"images": images, "annotations": anns,
                                     "categories": [{"id": cat_id[c], "name": c} for c in names]}))
    return json_path
