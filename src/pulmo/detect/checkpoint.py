"""Self-describing detect checkpoints (DESIGN rule 3), in the project's checkpoint format.

Besides weights, a detect checkpoint carries the class names, the class mapping applied
to ground truth, the image preparation (colour, scale, window), tiling, inference
thresholds (per class, chosen on validation) and the metrics reached.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pulmo.detect.config import DetectDataConfig, DetectExperimentConfig, InferenceConfig, TilingConfig
from pulmo.engine.checkpoint import half_precision, read_checkpoint, write_checkpoint
from pulmo.errors import CheckpointError


def save_detect_checkpoint(path: str | Path, detector: torch.nn.Module, cfg: DetectExperimentConfig, classes: list[str],
                           mapping: dict[str, str], thresholds: dict[str, float] | float, metrics: dict[str, Any],
                           half: bool = False) -> Path:
    state = detector.state_dict()
    bundle = {
        "task": "detect",
        "name": cfg.name,
        "labels": list(classes),
        "mapping": dict(mapping),
        "model": {"name": cfg.model.name, "params": {"num_classes": len(classes)}},
        "data": asdict(cfg.data),
        "tiling": asdict(cfg.tiling),
        "inference": asdict(cfg.inference),
        "thresholds": thresholds,
    }
    return write_checkpoint(path, bundle, half_precision(state) if half else state, metrics, cfg.to_dict())


def read_detect_checkpoint(path: str | Path) -> dict[str, Any]:
    bundle = read_checkpoint(path)
    if bundle.get("task") != "detect":
        raise CheckpointError(f"{path} is a {bundle.get('task')!r} checkpoint, not a detect checkpoint")
    return bundle


def configs_from_bundle(bundle: dict[str, Any]) -> tuple[DetectDataConfig, TilingConfig, InferenceConfig]:
    return DetectDataConfig(**bundle["data"]), TilingConfig(**bundle["tiling"]), InferenceConfig(**bundle["inference"])


def build_detector(bundle: dict[str, Any]) -> torch.nn.Module:
    """The detector of a checkpoint, fp32, eval mode (needs the ``detect`` extra)."""
    from pulmo.models.detector import create_detector

    det = create_detector(bundle["model"]["name"], **bundle["model"]["params"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in bundle["state_dict"].items()}
    try:
        det.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint weights do not fit its detector: {err}") from None
    return det.eval()
