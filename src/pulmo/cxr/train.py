"""Training for every chest X-ray model of the registry, through Lightning.

Models with a frozen backbone (``frozen_backbone = True``) get their backbone features
computed once (the plain image plus ``frozen_views`` augmented views of each training
image) and only their head trains; other models train end to end with fresh augmentation
every batch. The epoch kept is the one with the best macro-F1 on the validation set given
(an inner split of the training data: never the set that is reported).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from pulmo.cxr.balance import augment_batch, train_augment
from pulmo.cxr.config import CxrConfig, ImageConfig
from pulmo.cxr.data import ImageSet
from pulmo.cxr.task import EpochBatches, ImageClassificationTask, epoch_plan
from pulmo.engine.launch import Launch, quiet_lightning, ranks_agree, restore_best
from pulmo.models import create_model


@dataclass
class TrainResult:
    """The trained model (best epoch's weights, eval mode) and its history."""

    model: nn.Module
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    ranks: dict[str, Any] | None = None  # every process's weights hash, in a multi-process run


def build_model(cfg: CxrConfig) -> nn.Module:
    return create_model(cfg.model.name, num_classes=len(cfg.classes), in_chans=cfg.image.channels, **cfg.model.params)


def model_input(x: torch.Tensor, image: ImageConfig) -> torch.Tensor:
    from pulmo.cxr.preprocess import normalize_tensor

    return normalize_tensor(x, image)


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, image: ImageConfig, batch_size: int = 32) -> np.ndarray:
    """Class probabilities ``(N, K)`` for prepared images ``x`` ``(N, 1, S, S)`` in [0, 1]."""
    model.eval()
    out = [F.softmax(model(model_input(x[i:i + batch_size], image)), 1) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(model, "num_classes", 0)))


@torch.no_grad()
def _frozen_features(model: nn.Module, x: torch.Tensor, image: ImageConfig, batch_size: int = 32) -> torch.Tensor:
    model.eval()
    return torch.cat([model.features(model_input(x[i:i + batch_size], image)) for i in range(0, len(x), batch_size)])


def train_cxr(cfg: CxrConfig, train: ImageSet, val: ImageSet, progress: bool = False,
              launch: Launch | None = None) -> TrainResult:
    """Train ``cfg``'s model on ``train`` through Lightning (:class:`~pulmo.cxr.task.ImageClassificationTask`;
    ``launch``: devices, strategy and nodes, default one process); keep the epoch with the best
    macro-F1 on ``val`` (ties: the lower validation loss). Every process returns the result."""
    start = time.time()
    t = cfg.train
    launch = launch or Launch()
    L.seed_everything(t.seed, verbose=False)
    model = build_model(cfg)
    feats = val_feats = None
    if getattr(model, "frozen_backbone", False):
        aug = train_augment(cfg.image.size_px, t.strong_augment)
        views = [_frozen_features(model, train.x, cfg.image)]
        for _ in range(t.frozen_views):
            views.append(_frozen_features(model, augment_batch(train.x, aug), cfg.image))
        feats = torch.stack(views)  # (1 + frozen_views, N, d, 3, 3)
        val_feats = _frozen_features(model, val.x, cfg.image)
    task = ImageClassificationTask(model, cfg, train, val, feats, val_feats, progress)
    batches = EpochBatches(lambda rng: epoch_plan(cfg, train.y, rng), t.seed, t.batch_size,
                           t.frozen_views if feats is not None else 0)
    with tempfile.TemporaryDirectory(prefix="pulmo-cxr-") as tmp:
        best = ModelCheckpoint(dirpath=Path(tmp) / "checkpoints", monitor="val_key", mode="max", save_top_k=1, filename="best",
                               save_on_train_epoch_end=True)
        trainer = L.Trainer(max_epochs=t.epochs, **launch.trainer_kwargs(), callbacks=[best], logger=CSVLogger(tmp, name="logs"),
                            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=True,
                            num_sanity_val_steps=0, limit_val_batches=0)
        with quiet_lightning():
            # its own generator: the loader's per-epoch seed must not draw on the global stream that dropout uses
            trainer.fit(task, DataLoader(batches, batch_size=None, generator=torch.Generator()))
        best_epoch = restore_best(task, best) + 1
    ranks = ranks_agree(trainer, task)
    return TrainResult(task.model.eval(), best_epoch, task.history, time.time() - start, ranks)
