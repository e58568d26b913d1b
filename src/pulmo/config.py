"""Typed experiment configuration, loaded from YAML with a one-level ``base:`` merge.

An experiment file may name ``base: other.yaml`` (relative to itself); the base is read
first and the file's own keys are merged over it, dictionaries key by key, except that a
section naming another registry entry (``model: {name: ...}`` with a different ``name``)
replaces the base's section instead of inheriting its arguments. Unknown keys
raise :class:`~pulmo.errors.ConfigError` naming the key, so a typo never passes silently.
The resolved configuration is a plain dict (``to_dict``) that is saved in every run
directory and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from pulmo.errors import ConfigError

ICBHI_CLASSES: tuple[str, ...] = ("normal", "crackle", "wheeze", "both")


def default_data_root() -> Path:
    """Where real data lives: ``$PULMO_DATA``, else ``../shared/data`` from the working
    directory, else ``../shared/data`` from the source checkout this module lives in."""
    env = os.environ.get("PULMO_DATA")
    if env:
        return Path(env)
    here = Path.cwd().parent / "shared" / "data"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass
class AudioConfig:
    """How a respiratory cycle becomes a fixed-length waveform (paper section 4.2)."""

    sample_rate_hz: int = 4000
    band_low_hz: float = 100.0
    band_high_hz: float = 2000.0
    filter_order: int = 5
    cycle_seconds: float = 2.5
    pad: str = "zero"  # shorter cycles: "zero" padding or "repeat" (the cycle repeated from its start)

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0 or self.cycle_seconds <= 0:
            raise ConfigError("audio.sample_rate_hz and audio.cycle_seconds must be positive")
        if self.pad not in ("zero", "repeat"):
            raise ConfigError(f"audio.pad must be 'zero' or 'repeat', got {self.pad!r}")
        if not 0 <= self.band_low_hz < self.band_high_hz:
            raise ConfigError("audio.band_low_hz must be below audio.band_high_hz")

    @property
    def cycle_samples(self) -> int:
        return int(round(self.cycle_seconds * self.sample_rate_hz))


@dataclass
class DataConfig:
    """Which dataset, which classes, and how the validation split is carved."""

    dataset: str = "icbhi"
    root: str = ""  # empty: default_data_root() / dataset
    classes: list[str] = field(default_factory=lambda: list(ICBHI_CLASSES))
    val_fraction: float = 0.3
    strict: bool = False
    # "official": ICBHI's train/test split. "pooled_cv": every covered cycle pooled and cut into
    # `folds` patient-disjoint folds balanced by device; `fold` is the test fold (a second
    # protocol, never mixed with the official one).
    protocol: str = "official"
    folds: int = 5
    fold: int = 0
    extra: list[str] = field(default_factory=list)  # more training data: "kauh" (recording labels, MIL)
    evaluate_on: list[str] = field(default_factory=list)  # more test sets: "kauh" (held-out subjects, recording level)
    bag_windows: int = 6  # windows of audio.cycle_seconds drawn per KAUH recording in each training bag

    def __post_init__(self) -> None:
        if self.protocol not in ("official", "pooled_cv"):
            raise ConfigError(f"data.protocol must be 'official' or 'pooled_cv', got {self.protocol!r}")
        if not 0 <= self.fold < self.folds:
            raise ConfigError(f"data.fold must lie in 0..{self.folds - 1}, got {self.fold}")
        for name in (*self.extra, *self.evaluate_on):
            if name != "kauh":
                raise ConfigError(f"unknown dataset {name!r} in data.extra / data.evaluate_on; known: kauh")
        unknown = [c for c in self.classes if c not in ICBHI_CLASSES]
        if unknown:
            raise ConfigError(f"data.classes has unknown class names {unknown}; known: {list(ICBHI_CLASSES)}")
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ConfigError("data.classes must name at least two distinct classes")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("data.val_fraction must lie strictly between 0 and 1")

    def resolved_root(self) -> Path:
        return Path(self.root) if self.root else default_data_root() / self.dataset

    def sibling_root(self, name: str) -> Path:
        """Folder of another dataset beside this one (``kauh`` next to ``icbhi``)."""
        return self.resolved_root().parent / name


@dataclass
class NamedConfig:
    """A registry key plus keyword arguments for the object it builds."""

    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """``ce``, ``weighted_ce`` (inverse frequency) or ``class_balanced`` (Cui et al., beta)."""

    name: str = "ce"
    beta: float = 0.999


@dataclass
class TrainConfig:
    """Optimisation and selection. Selection always uses the validation split."""

    seed: int = 0
    max_epochs: int = 30
    batch_size: int = 32
    optimizer: str = "adamw"  # "adamw" or "adam" (Conv-ViT: Adam)
    schedule: str = "cosine"  # "cosine" over max_epochs, or "constant" (Conv-ViT: fixed 1e-4)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    monitor: str = "val_score"
    precision: str = "bf16-mixed"
    num_workers: int = 0
    mixup_alpha: float = 0.0  # 0: off; else Beta(alpha, alpha) mixing of feature maps and labels
    spec_augment: bool = False  # two frequency masks (<= 20 bins) and two time masks (<= 10 frames)
    time_shift: bool = False  # roll each training feature map by a random number of frames (circular)
    precompute_features: bool = False  # features of each cycle computed once (fixed start, no random crop)
    feature_cache: str = ""  # with precompute_features: a folder keeping them across runs ("" = none)
    sampler: str = "shuffle"  # or "device_balanced": draw cycles with weights P(label) / P(label | device)
    device_augment: float = 0.0  # probability that a training item goes through a random stethoscope response
    mil_weight: float = 1.0  # weight of the KAUH bag loss beside the cycle loss (with data.extra: [kauh])
    init_encoder: str = ""  # a pretrained encoder file (pulmo.engine.pretrain) loaded before training
    device_adversary: float = 0.0  # weight of a gradient-reversed, class-conditional stethoscope classifier (0: off)
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "adam"):
            raise ConfigError(f"train.optimizer must be 'adamw' or 'adam', got {self.optimizer!r}")
        if self.sampler not in ("shuffle", "device_balanced"):
            raise ConfigError(f"train.sampler must be 'shuffle' or 'device_balanced', got {self.sampler!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"train.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 0.0 <= self.device_augment <= 1.0:
            raise ConfigError(f"train.device_augment is a probability in [0, 1], got {self.device_augment}")
        if self.device_adversary < 0:
            raise ConfigError(f"train.device_adversary is a weight >= 0, got {self.device_adversary}")
        if self.device_adversary and self.mixup_alpha > 0:
            raise ConfigError("train.device_adversary needs each cycle's own label: it cannot be combined with mixup")
        if self.device_augment and self.precompute_features:
            raise ConfigError("train.device_augment filters waveforms: it cannot be combined with train.precompute_features")


class ExperimentFile:
    """What every capability's top-level experiment dataclass shares: a plain-dict round trip
    (``from_dict`` refuses unknown keys, naming them)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return _build(cls, data, "")  # type: ignore[no-any-return]


@dataclass
class ExperimentConfig(ExperimentFile):
    """One experiment file = one reported number (DESIGN rule 8)."""

    name: str = "experiment"
    task: str = "lung-sounds"
    description: str = ""
    paper: dict[str, float] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    features: NamedConfig = field(default_factory=lambda: NamedConfig("stft"))
    model: NamedConfig = field(default_factory=lambda: NamedConfig("resnet18_attn"))
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or 'config'}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"invalid {where or 'config'}: {err}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        renamed = isinstance(value, dict) and "name" in value and value["name"] != (out.get(key) or {}).get("name")
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not renamed:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def read_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """An experiment YAML as a plain dict: its one-level ``base:`` merged under it, ``name``
    defaulting to the file's stem, ``overrides`` (nested dicts) merged last. Every
    capability's loader builds its typed config from this."""
    path = Path(path)
    data = _read_yaml(path)
    base_name = data.pop("base", None)
    if base_name is not None:
        base = _read_yaml(path.parent / base_name)
        if "base" in base:
            raise ConfigError(f"{base_name}: only one level of 'base:' is supported")
        data = _merge(base, data)
    data.setdefault("name", path.stem)
    return _merge(data, overrides) if overrides else data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read a lung-sound experiment YAML (see :func:`read_experiment`).

    ``overrides`` uses nested dicts, e.g. ``{"train": {"seed": 2}}``.
    """
    return ExperimentConfig.from_dict(read_experiment(path, overrides))


def save_config(config: ExperimentFile, path: str | Path) -> None:
    """Write any capability's experiment config as YAML (what ``read_experiment`` reads back)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
