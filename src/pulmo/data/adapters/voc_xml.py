"""PASCAL VOC XML <-> :class:`~pulmo.data.boxes.BoxRecord` (the paper's annotation format).

VOC stores 1-based pixel indices; tools disagree about the ``-1``. We keep the numbers as
written (float), as most detection toolkits do, so a read/write round trip is exact.
A folder layout ``ROOT/<split>/images/*.jpg`` + ``ROOT/<split>/Annotations/*.xml`` (or
``JPEGImages``) is read by :func:`read_voc_folder`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from pulmo.data.boxes import BoxRecord
from pulmo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _num(node: ET.Element | None, tag: str, where: Path) -> float:
    child = None if node is None else node.find(tag)
    if child is None or child.text is None:
        raise DataError(f"{where}: missing <{tag}>")
    try:
        return float(child.text)
    except ValueError:
        raise DataError(f"{where}: <{tag}> is not a number: {child.text!r}") from None


def read_voc_xml(xml_path: str | Path, image_path: str | Path | None = None, split: str = "") -> BoxRecord:
    """One VOC annotation file as a record. ``image_path`` defaults to ``<filename>``
    next to the XML. Boxes with non-positive width or height raise :class:`DataError`."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataError(f"cannot read VOC annotation {xml_path}: {err}") from None
    size = root.find("size")
    width = int(_num(size, "width", xml_path)) if size is not None else 0
    height = int(_num(size, "height", xml_path)) if size is not None else 0
    boxes, labels = [], []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{xml_path}: an <object> has no <name>")
        bb = obj.find("bndbox")
        box = tuple(_num(bb, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(f"{xml_path}: box {box} of {name!r} has no area")
        boxes.append(box)
        labels.append(name)
    if image_path is None:
        image_path = xml_path.parent / (root.findtext("filename") or xml_path.stem)
    return BoxRecord(record_id=xml_path.stem, path=str(image_path), width=width, height=height,
                     boxes_xyxy=tuple(boxes), labels=tuple(labels), split=split, source="voc",
                     extra={"filename": root.findtext("filename") or ""})


def write_voc_xml(record: BoxRecord, xml_path: str | Path, depth: int = 1) -> Path:
    """Write one record as VOC XML (``<filename>`` = the image's file name)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = Path(record.path).name
    size = ET.SubElement(root, "size")
    for tag, v in (("width", record.width), ("height", record.height), ("depth", depth)):
        ET.SubElement(size, tag).text = str(v)
    for box, lab in zip(record.boxes_xyxy, record.labels):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = lab
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, tag).text = repr(float(v))
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(root)
    ET.ElementTree(root).write(xml_path, encoding="unicode")
    return xml_path


def _image_for(xml_path: Path, image_dir: Path) -> Path:
    for suf in IMAGE_SUFFIXES:
        cand = image_dir / f"{xml_path.stem}{suf}"
        if cand.is_file():
            return cand
    raise DataError(f"no image for {xml_path} in {image_dir}")


def read_voc_folder(root: str | Path, split: str) -> list[BoxRecord]:
    """All annotated images of one split: ``ROOT/<split>/{images|JPEGImages}`` with
    ``ROOT/<split>/Annotations``. Images are matched to XML files by file stem; an image
    without an XML file is an image without objects. ``ROOT`` may also be the split folder
    itself or hold the layout one level down (as ``xray_det/sixray_subset``)."""
    root = Path(root)
    candidates = [root / split, root, *(p / split for p in sorted(root.glob("*")) if p.is_dir())]
    base = next((c for c in candidates if (c / "Annotations").is_dir()), None)
    if base is None:
        raise DataError(f"no VOC layout for split {split!r} under {root} (expected {root}/{split}/Annotations)")
    image_dir = next((base / d for d in ("images", "JPEGImages") if (base / d).is_dir()), None)
    if image_dir is None:
        raise DataError(f"{base}: no images/ or JPEGImages/ folder")
    records = {}
    for xml in sorted((base / "Annotations").glob("*.xml")):
        records[xml.stem] = read_voc_xml(xml, _image_for(xml, image_dir), split)
    for img in sorted(image_dir.iterdir()):
        if img.suffix.lower() in IMAGE_SUFFIXES and img.stem not in records:
            records[img.stem] = BoxRecord(record_id=img.stem, path=str(img), width=0, height=0, split=split, source="voc")
    if not records:
        raise DataError(f"{base}: no annotations or images")
    return [records[k] for k in sorted(records)]
