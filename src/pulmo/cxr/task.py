"""Chest X-ray training as a LightningModule, so that every chest X-ray model trains through
Lightning like the other pulmo models (checkpoints, seeds, logging and several processes in
one place).

An epoch is a plan drawn by :func:`epoch_plan` (indices and augmentation
flags, balanced as ``train.balance`` says) from one seeded generator; each process of a
distributed run takes its own equal share of it. Batches carry indices only: the images (or,
for a frozen backbone, the precomputed features of the plain image and of ``frozen_views``
augmented views) stay in the module, and augmentation happens in ``training_step``. The
learning rate is set at each epoch's start (:func:`epoch_lr`). At each
epoch's end every process scores the whole validation set and logs ``val_key``: macro-F1,
ties broken by the lower validation loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from pulmo.cxr.balance import augment_batch, balanced_plan, sampler_weights, train_augment
from pulmo.cxr.config import CxrConfig
from pulmo.cxr.data import ImageSet
from pulmo.cxr.preprocess import normalize_tensor
from pulmo.engine.launch import process_share, selection_value
from pulmo.metrics.classification import classification_report

#: weight of the validation loss in ``val_key``: far below one macro-F1 step, so it only breaks ties
LOSS_TIE_BREAK = 1e-9


def epoch_lr(cfg: CxrConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): halved every ``lr_halve_every`` epochs, floor ``lr_min``."""
    t = cfg.train
    steps = epoch // t.lr_halve_every if t.lr_halve_every > 0 else 0
    return max(t.lr * 0.5**steps, t.lr_min)


def optimizer(cfg: CxrConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """``train.optimizer``: RMSprop with Keras' defaults (the paper's), Adam or AdamW."""
    t = cfg.train
    if t.optimizer == "rmsprop":  # Keras defaults: rho 0.9, epsilon 1e-7
        return torch.optim.RMSprop(params, lr=t.lr, alpha=0.9, eps=1e-7, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


def epoch_plan(cfg: CxrConfig, y: torch.Tensor, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's sample indices and augmentation flags, balanced as ``train.balance`` says."""
    t = cfg.train
    if t.balance == "augment":
        idx, aug = balanced_plan(y.numpy(), t.augment_target, rng)
        idx_perm = rng.permutation(len(idx))
        return idx[idx_perm], aug[idx_perm] | t.augment
    if t.balance == "sampler":
        w = sampler_weights(y.numpy()).numpy()
        idx = rng.choice(len(y), size=len(y), replace=True, p=w / w.sum())
    else:
        idx = rng.permutation(len(y))
    return idx, np.full(len(idx), t.augment)


class EpochBatches(IterableDataset):
    """Each pass: one epoch's plan ``plan(rng) -> (indices, flags)`` cut into batches of
    ``{"index", "augment", "view"}`` (a process's equal share in a distributed run); ``view``
    draws a precomputed augmented view (1..``views``) where ``augment`` is set, else 0."""

    def __init__(self, plan: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]], seed: int,
                 batch_size: int, views: int) -> None:
        self.plan, self.batch_size, self.views = plan, batch_size, views
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        idx, flags = self.plan(self.rng)
        mine = process_share(len(idx))
        idx, flags = idx[mine], flags[mine]
        for b in range(0, len(idx), self.batch_size):
            bi, bf = idx[b:b + self.batch_size], flags[b:b + self.batch_size]
            if len(bi) < 2:
                continue
            view = np.where(bf, self.rng.integers(1, self.views + 1, len(bi)) if self.views else 0, 0)
            yield {"index": torch.as_tensor(bi), "augment": torch.as_tensor(bf), "view": torch.as_tensor(view)}


class ImageClassificationTask(L.LightningModule):
    """Trains ``model`` on ``train``; scores ``val`` at every epoch's end. With a frozen
    backbone, ``features`` ``(1 + frozen_views, N, d, 3, 3)`` and ``val_features`` stand in
    for the images and only the head runs. ``history`` keeps one dict per epoch."""

    def __init__(self, model: nn.Module, cfg: CxrConfig, train: ImageSet, val: ImageSet,
                 features: torch.Tensor | None = None, val_features: torch.Tensor | None = None,
                 progress: bool = False) -> None:
        super().__init__()
        self.model, self.cfg, self.train_set, self.val_set = model, cfg, train, val
        self.features, self.val_features, self.progress = features, val_features, progress
        self.augment = train_augment(cfg.image.size_px, cfg.train.strong_augment)
        self.history: list[dict[str, float]] = []
        self._losses: list[float] = []

    @property
    def frozen(self) -> bool:
        return self.features is not None

    def on_train_epoch_start(self) -> None:
        self._lr = epoch_lr(self.cfg, self.current_epoch)
        for g in self.optimizers().optimizer.param_groups:
            g["lr"] = self._lr
        self.model.train()
        self._losses = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        bi, bf = batch["index"].cpu(), batch["augment"].cpu()
        if self.frozen:
            logits = self.model.head(self.features[batch["view"].cpu(), bi].to(self.device))
        else:
            xb = self.train_set.x[bi].clone()
            if bf.any():
                xb[bf] = augment_batch(xb[bf], self.augment)
            logits = self.model(normalize_tensor(xb.to(self.device), self.cfg.image))
        loss = F.cross_entropy(logits, self.train_set.y[bi].to(self.device))
        self._losses.append(loss.item())
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(bi))
        return loss

    @torch.no_grad()
    def on_train_epoch_end(self) -> None:
        self.model.eval()
        if self.frozen:
            logits = self.model.head(self.val_features.to(self.device))
        else:
            x = self.val_set.x
            logits = torch.cat([self.model(normalize_tensor(x[i:i + 32].to(self.device), self.cfg.image))
                                for i in range(0, len(x), 32)])
        logits = logits.cpu()
        val_loss = float(F.cross_entropy(logits, self.val_set.y))
        rep = classification_report(self.val_set.y.tolist(), logits.argmax(1).tolist(), list(self.cfg.classes))
        # the same figures on every process (same weights, whole validation set)
        self.log("val_key", selection_value(rep["macro_f1"] - LOSS_TIE_BREAK * val_loss), sync_dist=True)
        self.log("val_macro_f1", rep["macro_f1"], sync_dist=True)
        self.history.append({"epoch": self.current_epoch + 1, "lr": self._lr,
                             "train_loss": float(np.mean(self._losses)) if self._losses else float("nan"),
                             "val_loss": val_loss, "val_macro_f1": rep["macro_f1"], "val_accuracy": rep["accuracy"]})
        if self.progress and self.trainer.is_global_zero:
            h = self.history[-1]
            print(f"  epoch {h['epoch']:3d} lr {self._lr:.2e} loss {h['train_loss']:.4f} "
                  f"val loss {val_loss:.4f} macro-F1 {rep['macro_f1']:.4f}", flush=True)

    def configure_optimizers(self) -> Any:
        return optimizer(self.cfg, [p for p in self.model.parameters() if p.requires_grad])


__all__ = ["EpochBatches", "ImageClassificationTask", "LOSS_TIE_BREAK", "epoch_lr", "epoch_plan", "optimizer"]
