"""Typed configuration of a detection experiment (one YAML file per reported number),
loaded with the same ``base:`` merge and unknown-key checks as :mod:`pulmo.config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulmo.config import ExperimentFile, default_data_root, read_experiment
from pulmo.data.transforms.boxes import AUGMENTATIONS
from pulmo.errors import ConfigError


@dataclass
class DetectDataConfig:
    """Where images come from and how they are prepared.

    ``dataset`` is a folder under the data root in VOC layout (``xray_det``) or
    ``synthetic`` (16-bit body scans generated on the fly with ``synthetic`` settings).
    ``image_scale`` resizes every image before tiling (detections are scaled back).
    ``remap`` is one of original/score/size/binary/agnostic or a mapping file path.
    """

    dataset: str = "xray_det"
    root: str = ""
    color: bool = True
    image_scale: float = 1.0
    window_percentile: float = 0.0
    remap: str = "original"
    score_f1: dict[str, float] = field(default_factory=dict)  # per-class F1 for remap 'score'
    synthetic: dict[str, int] = field(default_factory=lambda: {"train": 60, "val": 20, "test": 20, "height": 750, "width": 608, "seed": 0})
    max_train_images: int = 0  # 0: all
    max_val_images: int = 0

    def __post_init__(self) -> None:
        if self.image_scale <= 0:
            raise ConfigError("data.image_scale must be positive")

    def resolved_root(self) -> Path:
        return Path(self.root) if self.root else default_data_root() / self.dataset


@dataclass
class TilingConfig:
    """``random_positive``: ``n_tiles`` tiles of ``tile`` px per image per epoch, each holding
    an object (+ ``n_negative`` object-free tiles); ``full``: the whole image scaled to fit
    one ``tile`` (the paper's no-tiling baseline). Inference uses grid tiles of ``tile`` px
    overlapping by ``overlap`` px (or the whole image for ``full``)."""

    mode: str = "random_positive"
    n_tiles: int = 4
    tile: int = 512
    n_negative: int = 0
    min_visible: float = 0.3
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.mode not in ("random_positive", "full"):
            raise ConfigError(f"tiling.mode must be 'random_positive' or 'full', got {self.mode!r}")
        if self.tile % 32:
            raise ConfigError(f"tiling.tile must be a multiple of 32 (the detector's stride), got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ConfigError("tiling.overlap must lie in [0, tile)")


@dataclass
class DetectorConfig:
    """A registered detector (``yolov5n``, ``yolov5s``) and an optional weights file."""

    name: str = "yolov5s"
    pretrained: str = ""


MONITORS = ("val_loss", "val_f1", "val_map50")


@dataclass
class DetectTrainConfig:
    """Optimisation (paper: Adam, lr 1e-3, batch 8) and validation-only selection.

    ``lr_final`` is the learning rate of the last epoch as a fraction of ``lr``, reached by
    cosine decay (ultralytics' ``lrf``); 1.0 keeps the rate constant, as the paper does.
    ``monitor`` picks the kept epoch on validation: ``val_loss``, ``val_f1`` or ``val_map50``
    (F1 / mAP50 of tiled inference on the validation images). ``patience`` > 0 stops training
    after that many evaluations without a better ``monitor`` value (``epochs`` is then a cap).
    """

    seed: int = 0
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    lr_final: float = 1.0
    weight_decay: float = 0.0
    augment: list[str] = field(default_factory=list)
    augment_p: float = 0.5
    eval_every: int = 2
    monitor: str = "val_loss"
    patience: int = 0  # evaluations without improvement before stopping; 0: train all epochs
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"train.augment has unknown names {unknown}; known: {list(AUGMENTATIONS)}")
        if self.monitor not in MONITORS:
            raise ConfigError(f"train.monitor must be one of {list(MONITORS)}, got {self.monitor!r}")
        if self.patience < 0:
            raise ConfigError(f"train.patience counts evaluations (0: off), got {self.patience}")
        if not 0 < self.lr_final <= 1:
            raise ConfigError(f"train.lr_final is a fraction of train.lr in (0, 1], got {self.lr_final}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ConfigError("train.epochs, train.batch_size and train.eval_every must be at least 1")


@dataclass
class InferenceConfig:
    """Tiled inference: candidate threshold ``conf``, per-tile NMS ``iou``, merge thresholds,
    whether per-class score thresholds are chosen on validation for F1, and ``flip_tta``:
    each tile also run mirrored left-right, ``off``, ``on`` or chosen by ``validation`` F1
    (a trained model's checkpoint stores the outcome, ``off`` or ``on``)."""

    conf: float = 0.05
    iou: float = 0.5
    score_threshold: float = 0.25
    per_class_thresholds: bool = True
    flip_tta: str = "off"

    def __post_init__(self) -> None:
        if self.flip_tta not in ("off", "on", "validation"):
            raise ConfigError(f"inference.flip_tta must be 'off', 'on' or 'validation', got {self.flip_tta!r}")


@dataclass
class DetectExperimentConfig(ExperimentFile):
    name: str = "detect"
    task: str = "detect"
    description: str = ""
    paper: dict[str, float] = field(default_factory=dict)
    data: DetectDataConfig = field(default_factory=DetectDataConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    model: DetectorConfig = field(default_factory=DetectorConfig)
    train: DetectTrainConfig = field(default_factory=DetectTrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


def load_detect_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DetectExperimentConfig:
    """Read a detection experiment YAML (optional one-level ``base:``), ``overrides`` last."""
    return DetectExperimentConfig.from_dict(read_experiment(path, overrides))
