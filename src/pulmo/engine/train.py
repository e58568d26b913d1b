"""Run one experiment end to end: data, split, training, selection on validation, test once.

The official test split is never seen during training or selection: the checkpoint kept
is the epoch with the best validation ICBHI score, and the test split is scored once,
after training, with that checkpoint.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from pulmo.config import ExperimentConfig, save_config
from pulmo.data.adapters.icbhi import load_icbhi
from pulmo.data.adapters.kauh import load_kauh
from pulmo.data.cycles import load_cycle_waveforms
from pulmo.data.datasets import BagDataset, CycleDataset, FeatureDataset
from pulmo.data.records import AudioRecord, save_manifest
from pulmo.data.sampling import device_balanced_weights
from pulmo.data.splits import hold_out_fold, official_split, patient_disjoint_split, patient_folds
from pulmo.engine.checkpoint import save_checkpoint
from pulmo.engine.evaluate import (
    extract_features,
    icbhi_report,
    kauh_report,
    predict_from_features,
    predict_probabilities,
    presence,
)
from pulmo.engine.launch import Launch, quiet_lightning, ranks_agree, restore_best
from pulmo.engine.pretrain import load_pretrained_encoder
from pulmo.engine.task import AudioClassifier, CycleClassificationTask
from pulmo.errors import ConfigError
from pulmo.features import create_features
from pulmo.losses import build_classification_loss
from pulmo.losses.mil import BagPresenceLoss
from pulmo.models import create_model, model_factory

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """ICBHI cycles by split; KAUH recordings (subject-disjoint) where the config asks for them."""

    train: list[AudioRecord]
    val: list[AudioRecord]
    test: list[AudioRecord]
    kauh_train: list[AudioRecord] = field(default_factory=list)
    kauh_test: list[AudioRecord] = field(default_factory=list)


FOLD_SEED = 0  # the pooled protocol's folds are the same for every run and seed


def make_splits(config: ExperimentConfig, split_seed: int = 0) -> tuple[Splits, dict[str, Any]]:
    """Test cycles by ``data.protocol``; validation carved patient-disjoint from the rest (``split_seed``).

    ``official``: ICBHI's train/test split. ``pooled_cv``: all covered cycles in
    ``data.folds`` patient-disjoint folds balanced by device and label; fold ``data.fold``
    is the test split. KAUH (``data.extra`` / ``data.evaluate_on``) is cut into the same
    number of subject-disjoint folds: fold ``data.fold`` is held out under both protocols.
    """
    dc = config.data
    if dc.dataset != "icbhi":
        raise ConfigError(f"data.dataset {dc.dataset!r} is not supported yet (icbhi)")
    index = load_icbhi(dc.resolved_root(), strict=dc.strict)
    keep = [r for r in index.records if r.label in dc.classes]
    if dc.protocol == "official":
        train_all, test = official_split(keep, "train"), official_split(keep, "test")
    else:
        train_all, test = hold_out_fold(keep, patient_folds(keep, dc.folds, seed=FOLD_SEED), dc.fold)
    train, val = patient_disjoint_split(train_all, dc.val_fraction, seed=split_seed)
    splits = Splits(train, val, test)
    if dc.extra or dc.evaluate_on:
        kauh = load_kauh(dc.sibling_root("kauh"))
        kauh_rest, splits.kauh_test = hold_out_fold(kauh, patient_folds(kauh, dc.folds, seed=FOLD_SEED, strata=("label",)),
                                                    dc.fold)
        if "kauh" in dc.extra:
            splits.kauh_train = kauh_rest
    shared = sorted({r.patient_id for r in splits.train + splits.val} & {r.patient_id for r in splits.test})
    info = {
        "protocol": dc.protocol if dc.protocol == "official" else f"pooled_cv fold {dc.fold} of {dc.folds}",
        "notes": index.notes,
        "missing_cycles": len(index.missing),
        "annotation_counts": {k: dict(v) for k, v in index.annotation_counts.items()},
        "patients_in_train_and_test": shared,
        "sizes": {name: len(getattr(splits, name)) for name in ("train", "val", "test", "kauh_train", "kauh_test")},
        "counts": {name: dict(Counter(r.label for r in getattr(splits, name))) for name in ("train", "val", "test")},
    }
    return splits, info


def build_net(config: ExperimentConfig, num_classes: int) -> AudioClassifier:
    """Features and model of ``config``. Models that take ``input_size`` (a ViT's patch grid)
    get the feature map's ``(F, frames)`` for one ``audio.cycle_seconds`` cycle."""
    features = create_features(
        config.features.name, **{"sample_rate_hz": config.audio.sample_rate_hz, **config.features.params}
    )
    params = dict(config.model.params)
    if "input_size" in inspect.signature(model_factory(config.model.name)).parameters and "input_size" not in params:
        with torch.no_grad():
            params["input_size"] = list(features(torch.zeros(1, config.audio.cycle_samples)).shape[2:])
    model = create_model(config.model.name, num_classes=num_classes, in_chans=features.channels, **params)
    return AudioClassifier(features, model)


def run_experiment(config: ExperimentConfig, out_dir: str | Path, progress: bool = True,
                   launch: Launch | None = None) -> dict[str, Any]:
    """Train, select on validation, score validation and test; write the run folder.

    Writes ``config.yaml``, ``splits/*.jsonl``, ``metrics.json``, ``model.pt`` (fp32),
    ``probabilities.npz`` (``val`` and ``test`` class probabilities, ``(N, K)``, in the
    manifests' order, for ensembling) and Lightning's CSV logs under ``out_dir``.
    ``launch``: devices, strategy and nodes (:mod:`pulmo.engine.launch`; default one process).
    In a multi-process run every process trains, only rank 0 scores and writes; the others
    return ``{}``. Returns the metrics dict.
    """
    launch = launch or Launch()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    started = time.time()
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    labels = list(config.data.classes)
    splits, data_info = make_splits(config)
    (out / "splits").mkdir(exist_ok=True)
    for name in ("train", "val", "test"):
        save_manifest(getattr(splits, name), out / "splits" / f"{name}.jsonl")
    waves = {
        name: load_cycle_waveforms(getattr(splits, name), config.audio, progress=progress)
        for name in ("train", "val", "test", "kauh_train", "kauh_test")
    }
    y = {name: [labels.index(r.label) for r in getattr(splits, name)] for name in ("train", "val", "test")}
    n, pad = config.audio.cycle_samples, config.audio.pad
    tc = config.train
    counts = [Counter(y["train"])[k] for k in range(len(labels))]
    net = build_net(config, len(labels))
    if tc.init_encoder:
        load_pretrained_encoder(net, tc.init_encoder)
    data = _training_datasets(config, net, waves, y, progress)
    sampler = None
    if tc.sampler == "device_balanced":
        weights = device_balanced_weights(y["train"], [r.device for r in splits.train])
        sampler = WeightedRandomSampler(weights.tolist(), len(weights), generator=torch.Generator().manual_seed(tc.seed))
    train_loader: Any = DataLoader(
        data["train"], batch_size=tc.batch_size, shuffle=sampler is None, sampler=sampler, num_workers=tc.num_workers,
        drop_last=len(y["train"]) > tc.batch_size,
    )
    bag_loss = None
    if splits.kauh_train:
        bags = BagDataset(waves["kauh_train"], [presence(r.label) for r in splits.kauh_train], n,
                          config.data.bag_windows, seed=tc.seed, device_augment=tc.device_augment,
                          sample_rate_hz=config.audio.sample_rate_hz)
        bag_batch = max(1, tc.batch_size // config.data.bag_windows)
        bag_loader = DataLoader(bags, batch_size=bag_batch, shuffle=True, num_workers=tc.num_workers,
                                drop_last=len(bags) > bag_batch)
        train_loader = CombinedLoader({"cycles": train_loader, "bags": bag_loader}, mode="max_size_cycle")
        bag_loss = BagPresenceLoss(*(labels.index(c) for c in ("crackle", "wheeze", "both")))
    val_loader = DataLoader(data["val"], batch_size=64, num_workers=tc.num_workers)
    loss = build_classification_loss(config.loss.name, counts, config.loss.beta)
    devices = sorted({r.device for r in splits.train})
    task = CycleClassificationTask(net, loss, labels.index("normal"), tc, bag_loss=bag_loss,
                                   train_devices=[devices.index(r.device) for r in splits.train])
    best = ModelCheckpoint(dirpath=out / "lightning", monitor=tc.monitor, mode="max", save_top_k=1, filename="best")
    trainer = L.Trainer(
        max_epochs=tc.max_epochs,
        precision=tc.precision,
        **launch.trainer_kwargs(),
        callbacks=[best, EarlyStopping(monitor=tc.monitor, mode="max", patience=tc.patience)],
        logger=CSVLogger(out, name="logs", version=""),
        enable_progress_bar=progress,
        enable_model_summary=False,
        limit_train_batches=tc.limit_train_batches,
        limit_val_batches=tc.limit_val_batches,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    with quiet_lightning():
        trainer.fit(task, train_loader, val_loader)
    restore_best(task, best)
    ranks = ranks_agree(trainer, task)
    if not trainer.is_global_zero:
        return {}
    train_seconds = time.time() - started
    net = task.net.float().eval()
    metrics: dict[str, Any] = {"name": config.name, "seed": tc.seed, "data": data_info}
    report = getattr(net.model, "pretrained_report", None)
    if report is not None:
        metrics["pretrained"] = asdict(report)
    if tc.precompute_features:  # the same maps the features module gives, computed once
        probs = {name: predict_from_features(net.model, _features(config, net, waves[name], progress)) for name in ("val", "test")}
    else:
        probs = {name: predict_probabilities(net, waves[name], n, pad=pad) for name in ("val", "test")}
    for name in ("val", "test"):
        pred = probs[name].argmax(1).tolist() if len(probs[name]) else []
        metrics[name] = icbhi_report(getattr(splits, name), y[name], pred, labels)
    if splits.kauh_test:
        metrics["kauh_test"] = kauh_report(net, waves["kauh_test"], splits.kauh_test, labels, n)
    np.savez_compressed(out / "probabilities.npz", **probs)
    metrics["best_epoch_val_score"] = float(best.best_model_score) if best.best_model_score is not None else None
    metrics["epochs_run"] = int(trainer.current_epoch)
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["device"] = _device_name()
    if ranks is not None:
        metrics["ranks"] = ranks
    save_checkpoint(out / "model.pt", net, config, labels, _summary(metrics))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _features(config: ExperimentConfig, net: AudioClassifier, waves: list[Any], progress: bool) -> torch.Tensor:
    cache = config.train.feature_cache or None
    return extract_features(net.features, waves, config.audio.cycle_samples, config.audio.pad, progress=progress, cache_dir=cache)


def _training_datasets(
    config: ExperimentConfig, net: AudioClassifier, waves: dict[str, list[Any]], y: dict[str, list[int]], progress: bool
) -> dict[str, Dataset[dict[str, torch.Tensor]]]:
    """Train and validation datasets: waveforms cut on the fly (random crops in training), or,
    with ``train.precompute_features``, feature maps computed once from each cycle's start."""
    n, pad, tc = config.audio.cycle_samples, config.audio.pad, config.train
    if tc.precompute_features:
        return {name: FeatureDataset(_features(config, net, waves[name], progress), y[name]) for name in ("train", "val")}
    return {
        "train": CycleDataset(waves["train"], y["train"], n, train=True, seed=tc.seed, pad=pad,
                              device_augment=tc.device_augment, sample_rate_hz=config.audio.sample_rate_hz),
        "val": CycleDataset(waves["val"], y["val"], n, train=False, pad=pad),
    }


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The short metrics stored inside a checkpoint."""
    keep = ("sensitivity", "specificity", "score", "n")
    return {split: {k: metrics[split][k] for k in keep} for split in ("val", "test")}


def cpu_model_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else the machine type."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.machine())


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {cpu_model_name()}, {torch.get_num_threads()} thread(s)"
