"""Typed configuration of a respiratory-rate experiment (one YAML file per reported number).

Reuses the loader of :mod:`pulmo.config` (one-level ``base:`` merge, unknown keys refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from pulmo.config import ExperimentFile, NamedConfig, default_data_root, read_experiment
from pulmo.errors import ConfigError


@dataclass
class RRDataConfig:
    """Which recordings, and how subjects are split (never by clip).

    ``test_fold`` of ``folds`` subject folds is the test split; validation subjects
    (``val_fraction`` of the rest) are carved from the training subjects with ``split_seed``.
    ``synthetic_fraction`` of each training batch's clips come from the breath generator
    (rates 0-60 bpm, so the heavy class exists; ``synthetic_bank`` clips are generated once
    and cropped at random); ``time_compress_fraction`` of the real
    clips are sped up 1.5-3x (rate multiplied alike); of the others, ``rate_stretch_fraction``
    are resampled by a factor drawn log-uniformly from ``rate_stretch_range`` (rate multiplied
    alike): paced recordings hold a few rates only (RRuJO: 8, 10, 12, 18, 20 bpm), and the
    stretch fills the range between them.

    Air-microphone audio (:mod:`pulmo.resp_rate.air_data`): ``air_fraction`` of the training
    clips come from ``air_bank`` simulator clips of ``air_bank_s`` seconds (settings group
    ``train``, resampled to the working rate, cropped at random); ``band_limit_fraction`` of
    all training clips (real, synthetic or air) are band-limited at random; ``val_air``
    simulator clips of ``val_air_s`` seconds (settings group ``val``, seed ``val_air_seed``)
    join the validation recordings for the epoch and post-processing choices.
    """

    dataset: str = "rrujo"
    root: str = ""
    folds: int = 5
    test_fold: int = 0
    val_fraction: float = 0.2
    split_seed: int = 0
    synthetic_fraction: float = 0.0
    synthetic_bank: int = 400
    time_compress_fraction: float = 0.0
    rate_stretch_fraction: float = 0.0
    rate_stretch_range: list[float] = field(default_factory=lambda: [0.8, 1.25])
    air_fraction: float = 0.0
    air_bank: int = 200
    air_bank_s: float = 30.0
    band_limit_fraction: float = 0.0
    val_air: int = 0
    val_air_s: float = 60.0
    val_air_seed: int = 7

    def __post_init__(self) -> None:
        if not 0 <= self.test_fold < self.folds:
            raise ConfigError("data.test_fold must lie in [0, data.folds)")
        if self.synthetic_fraction + self.air_fraction > 1.0:
            raise ConfigError("data.synthetic_fraction + data.air_fraction must be at most 1")
        for name in ("synthetic_fraction", "time_compress_fraction", "rate_stretch_fraction", "air_fraction",
                     "band_limit_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.{name} must lie in [0, 1]")
        lo, hi = self.rate_stretch_range
        if not 0 < lo <= hi:
            raise ConfigError("data.rate_stretch_range must be [low, high] with 0 < low <= high")

    def resolved_root(self) -> Path:
        return Path(self.root) if self.root else default_data_root() / self.dataset


@dataclass
class ClipConfig:
    """Audio rate and clip lengths. Training clips are ``min_s``-``max_s`` long (the
    paper's 4-7 s); recordings are scored in windows of ``window_s`` every ``hop_s``,
    and a recording's rate is the ``aggregate`` (median or mean) of its windows' rates.
    With ``refine_tolerance > 0`` that rate is then sharpened by the strongest peak of the
    recording's breath-envelope spectrum within ``± refine_tolerance`` of it
    (:func:`pulmo.resp_rate.dsp.refine_rate`); training picks the tolerance on validation
    subjects from ``refine_grid`` (0 = off). With ``three_halves_check`` the result is last
    moved to 1.5 x where band-envelope periodicity says so
    (:func:`pulmo.resp_rate.dsp.three_halves_check`); training turns it on only when it
    lowers the validation MAE. For a network with a rate-bin head, ``posterior_weight``
    (not None) replaces the aggregate and refinement: the rate is the envelope-spectrum peak
    that best fits the windows' mean rate distribution, the spectrum weighted by
    ``posterior_weight`` (:func:`pulmo.resp_rate.dsp.posterior_rate`) among the peaks up to
    ``posterior_max_bpm`` (30 for a network trained on real paced breathing only; up to 60
    for one that also learned heavy breathing); training compares each weight of
    ``posterior_grid`` with the refinement tolerances on validation."""

    sample_rate_hz: int = 2000
    min_s: float = 4.0
    max_s: float = 7.0
    window_s: float = 7.0
    hop_s: float = 1.0
    aggregate: str = "median"
    refine_tolerance: float = 0.0
    refine_grid: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.3, 0.4, 0.5])
    three_halves_check: bool = False
    posterior_weight: float | None = None
    posterior_grid: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    posterior_max_bpm: float = 30.0

    @property
    def window_samples(self) -> int:
        """A scoring window's length in samples at ``sample_rate_hz``."""
        return int(round(self.window_s * self.sample_rate_hz))

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ConfigError("clip.min_s must be positive and at most clip.max_s")
        if self.aggregate not in ("median", "mean"):
            raise ConfigError("clip.aggregate must be 'median' or 'mean'")


@dataclass
class AugmentConfig:
    """Background noise on training clips only: each clip stays clean or gets one noise
    type at an SNR drawn from one of ``snr_bands_db`` (equally likely). A clip's noise
    label is 1 when its SNR is below ``noisy_below_snr_db``."""

    enabled: bool = False
    snr_bands_db: list[list[float]] = field(default_factory=lambda: [[10.0, 20.0], [20.0, 30.0], [30.0, 40.0]])
    noise_types: list[str] = field(default_factory=lambda: ["hum", "fan", "traffic", "wind", "babble"])
    noisy_below_snr_db: float = 20.0


@dataclass
class RRLossConfig:
    """The paper's MTL loss: ``beta*l1*CCC_cost + gamma*l2*CE_breath + kappa*l3*CE_noise
    + (1-beta-gamma-kappa)*l4*FL_breath`` with DWA weights ``l``; ``mix = [beta, gamma, kappa]``.
    ``l1_weight`` adds an L1 term on the scaled rate (0: the paper's loss only);
    ``rate_bins_weight`` the rate-bin cross-entropy of a model with a rate-bin head, its soft
    targets ``rate_bins_sigma`` wide in natural-log units (:mod:`pulmo.losses.rate_bins`)."""

    alpha: float = 0.7
    mix: list[float] = field(default_factory=lambda: [0.6, 0.15, 0.1])
    focal_gamma: float = 2.0
    dwa_temperature: float = 2.0
    rate_scale_bpm: float = 30.0
    l1_weight: float = 0.0
    rate_bins_weight: float = 0.0
    rate_bins_sigma: float = 0.05


@dataclass
class RRTrainConfig:
    seed: int = 0
    epochs: int = 30
    clips_per_epoch: int = 2048
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    patience: int = 8
    val_hop_s: float = 3.0  # window hop for the per-epoch validation (final scores use clip.hop_s)
    select_on: str = "ccc"  # epoch choice: highest validation "ccc" or lowest "mae" of the recording rates

    def __post_init__(self) -> None:
        if self.select_on not in ("ccc", "mae"):
            raise ConfigError("train.select_on must be 'ccc' or 'mae'")


@dataclass
class RespRateConfig(ExperimentFile):
    name: str = "resp_rate"
    task: str = "resp-rate"
    description: str = ""
    paper: dict[str, float] = field(default_factory=dict)
    data: RRDataConfig = field(default_factory=RRDataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    features: NamedConfig = field(default_factory=lambda: NamedConfig("mfb"))
    model: NamedConfig = field(default_factory=lambda: NamedConfig("rr_lstm", {"variant": "lstm", "hidden": 32, "embed": 32}))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: RRLossConfig = field(default_factory=RRLossConfig)
    train: RRTrainConfig = field(default_factory=RRTrainConfig)


def load_rr_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RespRateConfig:
    """Read a respiratory-rate experiment YAML (optional one-level ``base:``), overrides last."""
    return RespRateConfig.from_dict(read_experiment(path, overrides))
