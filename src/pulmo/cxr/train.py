"""One training loop for every chest X-ray model of the registry.

Models with a frozen backbone (``frozen_backbone = True``) get their backbone features
computed once (the plain image plus ``frozen_views`` augmented views of each training
image) and only their head trains; other models train end to end with fresh augmentation
every batch. The epoch kept is the one with the best macro-F1 on the validation set given
(an inner split of the training data: never the set that is reported).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pulmo.cxr.balance import augment_batch, balanced_plan, sampler_weights, train_augment
from pulmo.cxr.config import CxrConfig, ImageConfig
from pulmo.cxr.data import ImageSet
from pulmo.metrics.classification import classification_report
from pulmo.models import create_model


@dataclass
class TrainResult:
    """The trained model (best epoch's weights, eval mode) and its history."""

    model: nn.Module
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def build_model(cfg: CxrConfig) -> nn.Module:
    return create_model(cfg.model.name, num_classes=len(cfg.classes), in_chans=cfg.image.channels, **cfg.model.params)


def epoch_lr(cfg: CxrConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): halved every ``lr_halve_every`` epochs, floor ``lr_min``."""
    t = cfg.train
    steps = epoch // t.lr_halve_every if t.lr_halve_every > 0 else 0
    return max(t.lr * 0.5**steps, t.lr_min)


def _optimizer(cfg: CxrConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "rmsprop":  # Keras defaults: rho 0.9, epsilon 1e-7
        return torch.optim.RMSprop(params, lr=t.lr, alpha=0.9, eps=1e-7, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


def _draws(cfg: CxrConfig, y: torch.Tensor, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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


def train_cxr(cfg: CxrConfig, train: ImageSet, val: ImageSet, progress: bool = False) -> TrainResult:
    """Train ``cfg``'s model on ``train``; keep the epoch with the best macro-F1 on ``val``."""
    start = time.time()
    t = cfg.train
    torch.manual_seed(t.seed)
    rng = np.random.default_rng(t.seed)
    model = build_model(cfg)
    frozen = bool(getattr(model, "frozen_backbone", False))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(cfg, trainable)
    aug = train_augment(cfg.image.size_px, t.strong_augment)
    if frozen:
        views = [_frozen_features(model, train.x, cfg.image)]
        for _ in range(t.frozen_views):
            views.append(_frozen_features(model, augment_batch(train.x, aug), cfg.image))
        feats = torch.stack(views)  # (1 + frozen_views, N, d, 3, 3)
        val_feats = _frozen_features(model, val.x, cfg.image)
    best: tuple[float, float, int, dict[str, Any]] | None = None
    history = []
    labels = list(cfg.classes)
    for epoch in range(t.epochs):
        lr = epoch_lr(cfg, epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        idx, flags = _draws(cfg, train.y, rng)
        losses = []
        for b in range(0, len(idx), t.batch_size):
            bi, bf = torch.as_tensor(idx[b:b + t.batch_size]), flags[b:b + t.batch_size]
            if len(bi) < 2:
                continue
            if frozen:
                v = torch.as_tensor(np.where(bf, rng.integers(1, t.frozen_views + 1, len(bi)) if t.frozen_views else 0, 0))
                logits = model.head(feats[v, bi])
            else:
                xb = train.x[bi].clone()
                if bf.any():
                    xb[torch.as_tensor(bf)] = augment_batch(xb[torch.as_tensor(bf)], aug)
                logits = model(model_input(xb, cfg.image))
            loss = F.cross_entropy(logits, train.y[bi])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            logits = model.head(val_feats) if frozen else torch.cat(
                [model(model_input(val.x[i:i + 32], cfg.image)) for i in range(0, len(val.x), 32)])
            val_loss = float(F.cross_entropy(logits, val.y))
        rep = classification_report(val.y.tolist(), logits.argmax(1).tolist(), labels)
        history.append({"epoch": epoch + 1, "lr": lr, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                        "val_loss": val_loss, "val_macro_f1": rep["macro_f1"], "val_accuracy": rep["accuracy"]})
        if progress:
            print(f"  epoch {epoch + 1:3d} lr {lr:.2e} loss {history[-1]['train_loss']:.4f} "
                  f"val loss {val_loss:.4f} macro-F1 {rep['macro_f1']:.4f}", flush=True)
        key = (rep["macro_f1"], -val_loss)
        if best is None or key > best[:2]:
            best = (key[0], key[1], epoch + 1, copy.deepcopy(model.state_dict()))
    assert best is not None
    model.load_state_dict(best[3])
    return TrainResult(model.eval(), best[2], history, time.time() - start)
