"""YOLO txt labels <-> :class:`~pulmo.data.boxes.BoxRecord`.

One ``.txt`` per image, one line per box: ``class_index x_center y_center width height``,
all but the index normalised by the image's width and height.
"""

from __future__ import annotations

from pathlib import Path

from pulmo.data.boxes import BoxRecord
from pulmo.errors import DataError


def read_yolo_txt(txt_path: str | Path, image_path: str | Path, width: int, height: int,
                  class_names: list[str], split: str = "") -> BoxRecord:
    """One label file (a missing file = no objects) for an image of ``width`` x ``height``."""
    txt_path = Path(txt_path)
    boxes, labels = [], []
    lines = txt_path.read_text().splitlines() if txt_path.is_file() else []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            k, xc, yc, w, h = int(parts[0]), *map(float, parts[1:5])
        except (ValueError, IndexError):
            raise DataError(f"{txt_path}:{n}: expected 'class xc yc w h', got {line!r}") from None
        if not 0 <= k < len(class_names):
            raise DataError(f"{txt_path}:{n}: class index {k} outside 0..{len(class_names) - 1}")
        boxes.append(((xc - w / 2) * width, (yc - h / 2) * height, (xc + w / 2) * width, (yc + h / 2) * height))
        labels.append(class_names[k])
    return BoxRecord(record_id=Path(image_path).stem, path=str(image_path), width=width, height=height,
                     boxes_xyxy=tuple(boxes), labels=tuple(labels), split=split, source="yolo")


def write_yolo_txt(record: BoxRecord, txt_path: str | Path, class_names: list[str]) -> Path:
    """Write one record's boxes (needs ``record.width``/``height``)."""
    if record.width <= 0 or record.height <= 0:
        raise DataError(f"{record.path}: YOLO labels need the image size")
    index = {c: i for i, c in enumerate(class_names)}
    lines = []
    for (x0, y0, x1, y1), lab in zip(record.boxes_xyxy, record.labels):
        if lab not in index:
            raise DataError(f"class {lab!r} of {record.path} is not in the class list")
        w, h = record.width, record.height
        lines.append(f"{index[lab]} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
    txt_path = Path(txt_path)
    txt_path.parent.mkdir(parents=True, exist_ok=True)
    txt_path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return txt_path
