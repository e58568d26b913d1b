"""Detector training as a LightningModule, so that the detector trains through Lightning like
every other pulmo model (best-epoch checkpoint, early stopping, seeds and several processes in
one place), with the paper's data pipeline rather than the detection engine's own.

An epoch is one draw of :func:`pulmo.detect.train.training_samples` (random positive and
negative tiles, augmented) from one seeded generator; each process of a distributed run takes
its own equal share of it. The learning rate is set at each epoch's start
(:func:`pulmo.detect.train.epoch_learning_rates`). Every ``train.eval_every`` epochs, and at
the last, every process scores the validation tiles (and, with ``train.monitor`` ``val_f1``
or ``val_map50``, tiled inference on the validation images) and logs ``val_value``: the
validation loss, or minus the monitored figure, so that lower is always better.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import IterableDataset

from pulmo.data.tiling import boxes_in_window, crop_window, random_negative_tiles, random_positive_tiles
from pulmo.data.transforms.boxes import BoxAugment
from pulmo.data.xray_image import to_detector_input
from pulmo.detect.config import DetectExperimentConfig, DetectTrainConfig
from pulmo.detect.data import PreparedImage
from pulmo.detect.infer import detect_split, image_windows
from pulmo.engine.launch import process_share, selection_value
from pulmo.metrics.detection import detection_report

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # (3, S, S) float32, boxes (n, 4), labels (n,)
Batch = tuple[torch.Tensor, list[tuple[np.ndarray, np.ndarray]]]  # (B, 3, S, S) tiles, (boxes, labels) per tile


def training_samples(images: list[PreparedImage], cfg: DetectExperimentConfig, rng: np.random.Generator,
                     augment: BoxAugment) -> list[Sample]:
    """One epoch of tiles: for each image ``n_tiles`` positive + ``n_negative`` negative
    windows (``full``: the whole scaled image), cropped, clipped, augmented, converted."""
    t = cfg.tiling
    out = []
    for prep in images:
        if t.mode == "full":
            windows = [(0, 0, t.tile, t.tile)]
        else:
            windows = random_positive_tiles(prep.width, prep.height, prep.boxes, t.n_tiles, t.tile, rng)
            windows += random_negative_tiles(prep.width, prep.height, prep.boxes, t.n_negative, t.tile, rng)
        for w in windows:
            boxes, keep = boxes_in_window(prep.boxes, w, t.min_visible)
            tile, boxes = augment(crop_window(prep.image, w), boxes, rng)
            out.append((to_detector_input(tile, prep.levels), boxes, prep.labels[keep]))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def validation_samples(images: list[PreparedImage], cfg: DetectExperimentConfig) -> list[Sample]:
    """Fixed grid tiles of the validation images with their clipped boxes (no augmentation)."""
    out = []
    for prep in images:
        for w in image_windows(prep, cfg.tiling):
            boxes, keep = boxes_in_window(prep.boxes, w, cfg.tiling.min_visible)
            out.append((to_detector_input(crop_window(prep.image, w), prep.levels), boxes, prep.labels[keep]))
    return out


def epoch_learning_rates(lr: float, lr_final: float, epochs: int) -> list[float]:
    """Learning rate of each epoch: cosine from ``lr`` at epoch 1 to ``lr * lr_final`` at the
    last (constant ``lr`` when ``lr_final`` is 1)."""
    if epochs == 1:
        return [lr]
    low = lr * lr_final
    return [low + (lr - low) * 0.5 * (1 + math.cos(math.pi * e / (epochs - 1))) for e in range(epochs)]


def sample_batches(samples: list[Sample], batch_size: int) -> Iterator[Batch]:
    """``samples`` in batches: ``(B, 3, S, S)`` tiles and one ``(boxes, labels)`` pair per tile."""
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        yield torch.from_numpy(np.stack([c[0] for c in chunk])), [(c[1], c[2]) for c in chunk]


def validation_loss(detector: torch.nn.Module, samples: list[Sample], batch_size: int) -> float:
    """Mean detector loss per tile over ``samples`` (eval mode, no gradients)."""
    detector.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, targets in sample_batches(samples, batch_size):
            loss, _ = detector.loss(x, targets)
            total += float(loss) * len(targets)
            n += len(targets)
    return total / max(n, 1)


def evaluates(train: DetectTrainConfig, epoch: int) -> bool:
    """Whether validation runs at the end of ``epoch`` (1-based): every ``eval_every`` epochs and at the last."""
    return epoch % train.eval_every == 0 or epoch == train.epochs


class EvaluationEarlyStopping(EarlyStopping):
    """Lightning's early stopping with ``patience`` counted in evaluations: epochs that run no
    validation (see :func:`evaluates`) are not checked (Lightning would see the last
    evaluation's figure again and count it as no improvement)."""

    def __init__(self, train: DetectTrainConfig, monitor: str) -> None:
        super().__init__(monitor=monitor, mode="min", patience=train.patience, check_on_train_epoch_end=True)
        self.train = train

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if evaluates(self.train, trainer.current_epoch + 1):
            super().on_train_epoch_end(trainer, pl_module)


class TileBatches(IterableDataset):
    """Each pass: one epoch of training tiles drawn from ``images`` with a generator seeded once
    (``train.seed``), cut into batches of ``train.batch_size``; in a distributed run each
    process takes an equal contiguous share (the remainder of the division is dropped)."""

    def __init__(self, images: list[PreparedImage], cfg: DetectExperimentConfig) -> None:
        self.images, self.cfg = images, cfg
        self.rng = np.random.default_rng(cfg.train.seed)
        self.augment = BoxAugment(tuple(cfg.train.augment), cfg.train.augment_p)
        self.last_epoch_tiles = 0

    def __iter__(self) -> Iterator[Batch]:
        samples = training_samples(self.images, self.cfg, self.rng, self.augment)
        self.last_epoch_tiles = len(samples)
        yield from sample_batches(samples[process_share(len(samples))], self.cfg.train.batch_size)


class DetectTask(L.LightningModule):
    """Trains ``detector`` (see :mod:`pulmo.models.detector`) on :class:`TileBatches`.

    ``val`` are the prepared validation images and ``val_samples`` their fixed grid tiles;
    ``classes`` the mapped class names. ``history`` keeps one dict per epoch (the rows of
    ``log.jsonl``, which rank 0 writes to ``log_path`` as each epoch ends)."""

    def __init__(self, detector: torch.nn.Module, cfg: DetectExperimentConfig, batches: TileBatches,
                 val: list[PreparedImage], val_samples: list[Sample], classes: list[str],
                 log_path: Path | None = None, progress: bool = False) -> None:
        super().__init__()
        self.detector, self.cfg, self.batches = detector, cfg, batches
        self.val, self.val_samples, self.classes = val, val_samples, classes
        self.log_path, self.progress = log_path, progress
        self.schedule = epoch_learning_rates(cfg.train.lr, cfg.train.lr_final, cfg.train.epochs)
        self.history: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._started = 0.0

    def on_train_start(self) -> None:
        if self.log_path is not None and self.trainer.is_global_zero:
            self.log_path.write_text("")  # one row per epoch follows

    def on_train_epoch_start(self) -> None:
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = self.schedule[self.current_epoch]
        self.detector.train()  # the previous evaluation left it in eval mode
        self._losses, self._started = [], time.time()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, targets = batch
        loss, _ = self.detector.loss(x, targets)
        self._losses.append(float(loss.detach()))
        return loss

    def on_train_epoch_end(self) -> None:
        epoch, t = self.current_epoch + 1, self.cfg.train
        row: dict[str, Any] = {"epoch": epoch, "lr": self.schedule[epoch - 1],
                               "train_loss": float(np.mean(self._losses)) if self._losses else None,
                               "train_tiles": self.batches.last_epoch_tiles,
                               "epoch_seconds": round(time.time() - self._started, 1)}
        if evaluates(t, epoch):
            row.update(self.evaluate())
            value = row["val_loss"] if t.monitor == "val_loss" else -row[t.monitor]
            # the same figure on every process (same weights, same validation images)
            self.log("val_value", selection_value(value), sync_dist=True)
        self.history.append(row)
        if self.trainer.is_global_zero:
            self._write(row)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss on the grid tiles and, when monitored, F1 and mAP50 of tiled inference."""
        t, inf = self.cfg.train, self.cfg.inference
        out = {"val_loss": validation_loss(self.detector, self.val_samples, t.batch_size)}
        if t.monitor in ("val_f1", "val_map50"):
            dets = detect_split(self.detector, self.val, self.cfg.tiling, self.classes, inf.conf, inf.iou)
            rep = detection_report(dets, inf.score_threshold)
            out.update(val_f1=rep["f1"], val_map50=rep["map50"])
        return out

    def _write(self, row: dict[str, Any]) -> None:
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if self.progress:
            print(f"[{self.cfg.name}] " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in row.items()), flush=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        return torch.optim.Adam(self.detector.parameters(), lr=t.lr, weight_decay=t.weight_decay)


__all__ = ["Batch", "DetectTask", "EvaluationEarlyStopping", "Sample", "TileBatches", "epoch_learning_rates", "evaluates",
           "sample_batches", "training_samples", "validation_loss", "validation_samples"]
