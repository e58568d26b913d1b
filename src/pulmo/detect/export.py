"""The detector to ONNX through ultralytics' own exporter, and the tiles that calibrate its int8 export.

The exported graph is the YOLO network after Conv+BN fusion (``Exporter(format="onnx",
dynamic=True)``): input ``images`` ``(batch, 3, H, W)`` float32 in [0, 1], batch and size
dynamic (multiples of the stride), output ``output0`` ``(batch, 4 + classes, anchors)``: box
centre x, centre y, width, height in input pixels, then class probabilities. NMS stays outside
the graph: :class:`~pulmo.inference.onnx.OnnxModule` takes the place of ``UltralyticsYolo.net``,
so both runtimes share the detector's ``predict`` (thresholds, ultralytics' NMS) and the tiling
around it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pulmo.detect.checkpoint import build_detector, read_detect_checkpoint


def export_detector(checkpoint: str | Path, out: str | Path) -> tuple[int, int, int]:
    """Write the detector of ``checkpoint`` to ``out`` (FP32 ONNX, dynamic batch and size);
    returns the shape of one input tile, ``(3, tile, tile)``."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    bundle = read_detect_checkpoint(checkpoint)
    net = build_detector(bundle).net  # a fresh copy: the exporter fuses and modifies what it is given
    from ultralytics.engine.exporter import Exporter

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net.task = "detect"  # read by the exporter; a model built from a YAML file lacks it
    net.pt_path = str(out.with_suffix(".pt"))  # the exporter writes this name with the suffix .onnx
    tile = int(bundle["tiling"]["tile"])
    written = Path(Exporter(overrides={"format": "onnx", "imgsz": tile, "dynamic": True, "simplify": False, "batch": 1,
                                       "device": "cpu"})(net))
    if written != out:
        written.replace(out)
    return 3, tile, tile


def calibration_tiles(checkpoint: str | Path | None, root: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3, tile, tile)`` detector inputs for int8 calibration: one grid tile, chosen at
    random, from each of ``n`` training images of the VOC folder ``root`` (prepared and
    windowed as at inference)."""
    from pulmo.data.remap import apply_mapping
    from pulmo.data.adapters.voc_xml import read_voc_folder
    from pulmo.data.tiling import crop_window
    from pulmo.data.xray_image import to_detector_input
    from pulmo.detect.infer import image_windows
    from pulmo.inference.detect import DetectPipeline

    pipe = DetectPipeline.from_checkpoint(checkpoint)
    train = apply_mapping(read_voc_folder(root, "train"), pipe.mapping)
    tiles = []
    for i in rng.permutation(len(train))[:n]:
        prep = pipe.prepare(train[i])
        windows = image_windows(prep, pipe.tiling)
        tile = to_detector_input(crop_window(prep.image, windows[rng.integers(len(windows))]), prep.levels)
        tiles.append(tile)
    return np.stack(tiles).astype(np.float32)


__all__ = ["calibration_tiles", "export_detector"]
