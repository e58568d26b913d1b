"""Typed configuration for chest X-ray classification (image, gates, training).

Loaded from YAML with the project's one-level ``base:`` merge and strict key checking
(the helpers of :mod:`pulmo.config`); saved whole inside every checkpoint so inference
never needs the training file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulmo.config import ExperimentFile, NamedConfig, read_experiment
from pulmo.errors import ConfigError

COVID3_CLASSES: tuple[str, ...] = ("Covid", "Normal", "Viral Pneumonia")
PNEUMONIAMNIST_CLASSES: tuple[str, ...] = ("Normal", "Pneumonia")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageConfig:
    """How a grayscale X-ray becomes a model input ``(C, size_px, size_px)``.

    ``contrast``: ``minmax`` (1st-99th percentile stretch), ``equalize`` (global histogram
    equalisation) or ``clahe`` (contrast-limited adaptive equalisation). ``lung_crop``: crop
    to the lung fields found by :func:`pulmo.cxr.preprocess.lung_box` first. ``normalize``:
    ``imagenet`` (ImageNet mean/std per channel, for ImageNet backbones) or ``half``
    (``(x - 0.5) / 0.5``).
    """

    size_px: int = 128
    channels: int = 1
    contrast: str = "minmax"
    lung_crop: bool = False
    normalize: str = "half"

    def __post_init__(self) -> None:
        if self.size_px < 16:
            raise ConfigError(f"image.size_px must be at least 16, got {self.size_px}")
        if self.channels not in (1, 3):
            raise ConfigError(f"image.channels must be 1 or 3, got {self.channels}")
        if self.contrast not in ("minmax", "equalize", "clahe"):
            raise ConfigError(f"image.contrast must be minmax, equalize or clahe, got {self.contrast!r}")
        if self.normalize not in ("imagenet", "half"):
            raise ConfigError(f"image.normalize must be imagenet or half, got {self.normalize!r}")


@dataclass
class GateConfig:
    """Quality gates (paper section 3.1), measured on the image resized to ``size_px`` square
    in 0-255 gray levels: blur = variance of the Laplacian below ``blur_min``; contrast =
    standard deviation of gray levels below ``contrast_min`` or above ``contrast_max``."""

    enabled: bool = True
    size_px: int = 256
    blur_min: float = 20.0
    contrast_min: float = 25.0
    contrast_max: float = 100.0

    def __post_init__(self) -> None:
        if not 0 <= self.contrast_min < self.contrast_max:
            raise ConfigError("gates.contrast_min must be below gates.contrast_max")
        if self.blur_min < 0 or self.size_px < 16:
            raise ConfigError("gates.blur_min must be >= 0 and gates.size_px >= 16")


@dataclass
class CxrTrainConfig:
    """Optimisation. ``balance``: ``augment`` (augmented copies up to ``augment_target`` per
    class, the paper's way), ``sampler`` (inverse-frequency sampling weights) or ``none``.
    ``lr_halve_every`` epochs the learning rate halves, never below ``lr_min`` (paper: 5, 1e-6).
    ``frozen_views``: for frozen-backbone models, backbone features are computed once for the
    plain image and this many augmented views of each training image, then only the head trains."""

    seed: int = 0
    epochs: int = 20
    batch_size: int = 16
    optimizer: str = "rmsprop"
    lr: float = 1e-3
    lr_halve_every: int = 5
    lr_min: float = 1e-6
    weight_decay: float = 0.0
    balance: str = "augment"
    augment_target: int = 0  # 0: the largest class's count
    augment: bool = True
    strong_augment: bool = False  # random resized crops too (hide body-size / framing cues)
    val_fraction: float = 0.15  # inner validation carved from training data, for epoch selection
    frozen_views: int = 4

    def __post_init__(self) -> None:
        if self.optimizer not in ("rmsprop", "adam", "adamw"):
            raise ConfigError(f"train.optimizer must be rmsprop, adam or adamw, got {self.optimizer!r}")
        if self.balance not in ("augment", "sampler", "none"):
            raise ConfigError(f"train.balance must be augment, sampler or none, got {self.balance!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("train.epochs, train.batch_size and train.lr must be positive")


@dataclass
class CxrConfig(ExperimentFile):
    """One chest X-ray experiment."""

    name: str = "cxr"
    task: str = "cxr"
    description: str = ""
    paper: dict[str, Any] = field(default_factory=dict)  # the paper's reported values, as fractions
    dataset: str = "covid19_3class"  # folder under <data root>/cxr: covid19_3class or pneumoniamnist
    root: str = ""  # the dataset's folder, where it is not <data root>/cxr/<dataset>
    classes: list[str] = field(default_factory=lambda: list(COVID3_CLASSES))
    image: ImageConfig = field(default_factory=ImageConfig)
    gates: GateConfig = field(default_factory=GateConfig)
    model: NamedConfig = field(default_factory=lambda: NamedConfig("vbreathnet"))
    train: CxrTrainConfig = field(default_factory=CxrTrainConfig)


def load_cxr_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CxrConfig:
    """Read a YAML experiment (with an optional one-level ``base:`` file); ``overrides`` last."""
    return CxrConfig.from_dict(read_experiment(path, overrides))
