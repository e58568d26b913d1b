"""Object detectors behind one small interface, so the rest of pulmo never imports the
engine (``ultralytics``, AGPL-3.0, installed with the ``pulmo[detect]`` extra).

A detector is an ``nn.Module`` with ``num_classes`` and two methods on square tiles:

- ``loss(images, targets)``: ``images`` ``(B, 3, S, S)`` float in [0, 1]; ``targets`` one
  ``(boxes_xyxy (n, 4) pixels, labels (n,) int)`` pair per image -> ``(scalar loss,
  {"box": .., "cls": .., "dfl": ..})``. Works in train and eval mode (eval: validation loss).
- ``predict(images, conf, iou)`` -> one ``(boxes (k, 4) float pixels, scores (k,),
  labels (k,) int)`` NumPy triple per image, after per-tile NMS.

Detectors are built by name from :data:`DETECTORS` (``yolov5n``, ``yolov5s``): YOLOv5 from
the engine's model definition (``yolov5n.yaml``: the anchor-free "YOLOv5u" head of
ultralytics 8), randomly initialised; weights come only from a file the user gives.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pulmo.errors import CheckpointError, ConfigError
from pulmo.registry import Registry

DETECTORS: Registry[Any] = Registry("detector")
ENGINE_HINT = "the detector engine is not installed: pip install 'pulmo[detect]' (ultralytics, AGPL-3.0)"

Targets = list[tuple[np.ndarray, np.ndarray]]
Detections = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def import_engine() -> None:
    """Import ultralytics (``ConfigError`` with the install hint if absent) without its patch of Pillow.

    On import, ultralytics replaces ``PIL.Image.open`` process-wide with a wrapper that, on a
    file Pillow cannot identify, tries to install ``pi-heif`` and fails offline with
    ``ModuleNotFoundError``; the rest of pulmo (the chest X-ray reader, the service's input
    checks) relies on Pillow's own errors, so the original is put back.
    """
    try:
        import ultralytics  # noqa: F401
        from ultralytics.utils import patches
    except ImportError:
        raise ConfigError(ENGINE_HINT) from None
    from PIL import Image

    if Image.open is patches.image_open:
        Image.open = patches._image_open


def engine_available() -> bool:
    """Whether the optional detector engine can be imported."""
    try:
        import_engine()
    except ConfigError:
        return False
    return True


class UltralyticsYolo(nn.Module):
    """A YOLO model from an ultralytics model YAML (``yolov5n.yaml``, ``yolov5s.yaml``)."""

    def __init__(self, model_yaml: str, num_classes: int) -> None:
        super().__init__()
        os.environ.setdefault("YOLO_OFFLINE", "1")
        import_engine()
        try:
            from ultralytics.cfg import get_cfg
            from ultralytics.nn.tasks import DetectionModel
            from ultralytics.utils import DEFAULT_CFG, LOGGER
        except ImportError:
            raise ConfigError(ENGINE_HINT) from None
        if num_classes < 1:
            raise ConfigError("a detector needs at least one class")
        self.num_classes = num_classes
        self.model_yaml = model_yaml
        LOGGER.setLevel(logging.WARNING)  # no build chatter on the command line
        self.net = DetectionModel(model_yaml, nc=num_classes, verbose=False)
        self.net.args = get_cfg(DEFAULT_CFG)  # loss gains (box 7.5, cls 0.5, dfl 1.5)
        self.stride = int(self.net.stride.max())

    def loss(self, images: torch.Tensor, targets: Targets) -> tuple[torch.Tensor, dict[str, float]]:
        size_h, size_w = images.shape[-2:]
        idx, cls, xywh = [], [], []
        for i, (boxes, labels) in enumerate(targets):
            b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
            idx.append(torch.full((len(b),), float(i)))
            cls.append(torch.as_tensor(np.asarray(labels, dtype=np.float32).reshape(-1, 1)))
            xywh.append(torch.stack([(b[:, 0] + b[:, 2]) / 2 / size_w, (b[:, 1] + b[:, 3]) / 2 / size_h,
                                     (b[:, 2] - b[:, 0]) / size_w, (b[:, 3] - b[:, 1]) / size_h], 1))
        batch = {"img": images, "batch_idx": torch.cat(idx), "cls": torch.cat(cls), "bboxes": torch.cat(xywh)}
        if getattr(self.net, "criterion", None) is None:
            self.net.criterion = self.net.init_criterion()
        preds = self.net(images)
        total, items = self.net.criterion(preds, batch)
        parts = items.items() if isinstance(items, dict) else zip(("box", "cls", "dfl"), items.detach().flatten())
        return total.sum() / max(len(targets), 1), {str(k).removesuffix("_loss"): float(v) for k, v in parts}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, conf: float = 0.05, iou: float = 0.5) -> Detections:
        from ultralytics.utils.nms import non_max_suppression

        was_training = self.training
        self.eval()
        out = self.net(images)
        out = out[0] if isinstance(out, (tuple, list)) else out
        dets = non_max_suppression(out, conf_thres=conf, iou_thres=iou, nc=self.num_classes, max_det=100)
        self.train(was_training)
        return [(d[:, :4].cpu().numpy().astype(np.float64), d[:, 4].cpu().numpy().astype(np.float64),
                 d[:, 5].cpu().numpy().astype(np.int64)) for d in dets]

    def forward(self, images: torch.Tensor) -> Any:
        return self.net(images)


@DETECTORS.register("yolov5n")
def yolov5n(num_classes: int) -> UltralyticsYolo:
    """YOLOv5 nano (about 2.5 M parameters with 3 classes)."""
    return UltralyticsYolo("yolov5n.yaml", num_classes)


@DETECTORS.register("yolov5s")
def yolov5s(num_classes: int) -> UltralyticsYolo:
    """YOLOv5 small, the paper's model (about 9 M parameters)."""
    return UltralyticsYolo("yolov5s.yaml", num_classes)


def create_detector(name: str, num_classes: int) -> UltralyticsYolo:
    """Build a registered detector: ``create_detector("yolov5s", num_classes=3)``."""
    return DETECTORS.get(name)(num_classes=num_classes)


def load_pretrained(detector: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy weights from a file the user gives (a pulmo detect checkpoint, a plain state
    dict, or an ultralytics ``.pt`` with a pickled ``model``) where names and shapes fit.

    Returns ``{"loaded": [...], "missing": [...], "skipped": [...]}`` (skipped: in the file
    but absent or of another shape here, e.g. the class head of a different class count).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)  # the user's own file
    except Exception as err:  # noqa: BLE001  (torch raises many types)
        raise CheckpointError(f"cannot read weights {path}: {err}") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        state = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and hasattr(obj["model"], "state_dict"):
        state = {f"net.{k}": v for k, v in obj["model"].float().state_dict().items()}
    elif isinstance(obj, dict):
        state = obj
    else:
        raise CheckpointError(f"{path}: no state dict found")
    own = detector.state_dict()
    fit = {k: v.float() for k, v in state.items() if k in own and own[k].shape == v.shape}
    detector.load_state_dict({**own, **fit})
    return {"loaded": sorted(fit), "missing": sorted(set(own) - set(fit)),
            "skipped": sorted(set(state) - set(fit))}
