"""Train the transfer head (:class:`pulmo.models.transfer.FrozenBackboneClassifier`'s ``head``)
on cached frozen-backbone features, with source-aware sampling and an optional source adversary.

Features come as ``(V, N, d, 3, 3)``: view 0 is the plain image, views ``1..V-1`` harmonising
augmentations (:func:`pulmo.cxr.features.view_features`). Each epoch draws ``N`` training images
with probability proportional to their sampling weight (:func:`sampling_weights`) and, with
``augment``, a random augmented view of each. Training runs through Lightning (:class:`HeadTask`,
one process on the CPU); the epoch kept is the one with the best validation macro-F1 (then lowest
validation loss), as the best-epoch checkpoint saved it.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from pulmo.cxr.task import LOSS_TIE_BREAK
from pulmo.engine.launch import Launch, quiet_lightning, restore_best, selection_value
from pulmo.losses.adversarial import ConditionalAdversary


def make_head(channels: int = 1280, hidden: int = 128, num_classes: int = 3, dropout: float = 0.3,
              cells: int = 9) -> nn.Sequential:
    """The same layers (and state-dict keys) as ``FrozenBackboneClassifier.head`` (``cells`` = 9:
    a 3 x 3 pooled map; 1: globally pooled features)."""
    return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cells * channels, hidden), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(hidden, num_classes))


def gap_to_grid(head: nn.Sequential) -> nn.Sequential:
    """A head trained on globally pooled features ``(d,)`` as the equivalent 3 x 3 head: the first
    layer's weight for channel ``c`` spread over the 9 cells of ``c`` (flatten order ``c * 9 + cell``)
    divided by 9, so ``grid(x) == gap(x.mean((2, 3)))`` for any ``x (B, d, 3, 3)``."""
    first = head[2]
    out = make_head(first.in_features, first.out_features, head[5].out_features, head[1].p)
    state = {k: v.clone() for k, v in head.state_dict().items()}
    state["2.weight"] = first.weight.detach().repeat_interleave(9, dim=1) / 9
    out.load_state_dict(state)
    return out.eval()


def sampling_weights(labels: Sequence[int], sources: Sequence[str], balance: str) -> np.ndarray:
    """Per-image sampling weights summing to 1. ``class``: every class equally likely;
    ``source``: every class equally likely and, within a class, every source equally likely."""
    labels, sources = list(labels), list(sources)
    n_class = Counter(labels)
    if balance == "class":
        w = np.array([1.0 / n_class[y] for y in labels])
    elif balance == "source":
        n_cs = Counter(zip(labels, sources))
        per_class = {y: len({s for (c, s) in n_cs if c == y}) for y in n_class}
        w = np.array([1.0 / (per_class[y] * n_cs[(y, s)]) for y, s in zip(labels, sources)])
    else:
        raise ValueError(f"balance must be 'class' or 'source', got {balance!r}")
    return w / w.sum()


@dataclass
class HeadSpec:
    """``balance``: ``class`` or ``source`` (:func:`sampling_weights`); ``augment``: draw augmented
    views; ``adversary``: weight of the gradient-reversed source classifier on the hidden layer (0: off);
    ``global_pool``: train on features averaged over the 3 x 3 map (where on the film a pattern lies,
    e.g. a marker in a corner, is then invisible), returned as the equivalent 3 x 3 head.
    The adversary is told the true class (its input: hidden layer + one-hot class), so what it
    removes is source information beyond the class: sources and classes are confounded here,
    and an unconditional adversary would remove the classes too."""

    balance: str = "source"
    augment: bool = True
    adversary: float = 0.0
    global_pool: bool = False
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4


@dataclass
class HeadResult:
    head: nn.Sequential
    best_epoch: int
    val_logits: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)


def head_logits(head: nn.Module, feats: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``(N, K)`` logits of ``head`` (eval mode) for features ``(N, d, 3, 3)``."""
    head.eval()
    with torch.no_grad():
        return torch.cat([head(torch.from_numpy(feats[i:i + batch_size]).float())
                          for i in range(0, len(feats), batch_size)]).numpy()


def hidden_activations(head: nn.Sequential, feats: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``(N, hidden)`` activations after the head's ReLU (what its last layer sees)."""
    head.eval()
    with torch.no_grad():
        return torch.cat([head[:4](torch.from_numpy(feats[i:i + batch_size]).float())
                          for i in range(0, len(feats), batch_size)]).numpy()


class ResampledEpochs(IterableDataset):
    """Each pass (epoch): ``n`` training images drawn with replacement with probabilities
    ``weights (n,)`` and, with ``views > 1``, a random augmented view (1..``views - 1``) of each,
    else view 0; cut into batches ``{"index": (B,), "view": (B,)}`` (a last batch of one is
    dropped). One generator seeded ``seed`` draws every epoch."""

    def __init__(self, weights: np.ndarray, views: int, batch_size: int, seed: int) -> None:
        self.weights, self.views, self.batch_size = weights, views, batch_size
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.weights)
        idx = self.rng.choice(n, size=n, replace=True, p=self.weights)
        view = self.rng.integers(1, self.views, n) if self.views > 1 else np.zeros(n, dtype=int)
        for b in range(0, n, self.batch_size):
            bi, bv = idx[b:b + self.batch_size], view[b:b + self.batch_size]
            if len(bi) >= 2:
                yield {"index": torch.as_tensor(bi), "view": torch.as_tensor(bv)}


class HeadTask(L.LightningModule):
    """Trains ``head`` (:func:`make_head`) on cached features ``feats (V, N, d, c, c)`` (``c`` 3, or 1
    when globally pooled) with ``labels (N,)``: cross-entropy, plus the ``adversary``'s loss on the
    hidden layer given each image's source index ``sources (N,)``; Adam. At every epoch's end it
    scores ``val_feats (M, d, c, c)`` / ``val_labels (M,)`` and logs ``val_key``: macro-F1 over the
    classes present, ties broken by the lower validation loss. ``history`` keeps one dict per epoch."""

    def __init__(self, head: nn.Sequential, adversary: ConditionalAdversary | None, feats: np.ndarray,
                 labels: np.ndarray, sources: torch.Tensor, val_feats: np.ndarray, val_labels: np.ndarray, lr: float,
                 weight_decay: float) -> None:
        super().__init__()
        self.head, self.adversary = head, adversary
        self.feats, self.val_feats, self.val_labels = feats, val_feats, val_labels
        self.labels, self.sources = torch.as_tensor(labels, dtype=torch.long), sources
        self.lr, self.weight_decay = lr, weight_decay
        self.history: list[dict[str, float]] = []

    def on_train_epoch_start(self) -> None:
        self.head.train()  # the previous epoch's validation left it in eval mode

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        bi, bv = batch["index"].cpu(), batch["view"].cpu()
        hidden = self.head[:4](torch.from_numpy(self.feats[bv.numpy(), bi.numpy()]).float().to(self.device))
        y = self.labels[bi].to(self.device)
        loss = F.cross_entropy(self.head[4:](hidden), y)
        if self.adversary is not None:
            loss = loss + self.adversary.loss(hidden, y, self.sources[bi].to(self.device))
        return loss

    def on_train_epoch_end(self) -> None:
        logits = head_logits(self.head, self.val_feats)
        val_loss = float(F.cross_entropy(torch.from_numpy(logits), torch.as_tensor(self.val_labels, dtype=torch.long)))
        f1 = float(f1_score(self.val_labels, logits.argmax(1), labels=sorted(set(self.val_labels.tolist())),
                            average="macro", zero_division=0))
        # float64: in float32 the tie-break term would vanish below macro-F1's rounding step
        self.log("val_key", selection_value(f1 - LOSS_TIE_BREAK * val_loss))
        self.history.append({"epoch": self.current_epoch + 1, "val_macro_f1": f1, "val_loss": val_loss})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.head.parameters()) + (list(self.adversary.parameters()) if self.adversary is not None else [])
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


def train_head(feats: np.ndarray, labels: np.ndarray, sources: Sequence[str], val_feats: np.ndarray,
               val_labels: np.ndarray, spec: HeadSpec, seed: int = 0, num_classes: int = 3) -> HeadResult:
    """Train a head on ``feats (V, N, d, 3, 3)`` with ``labels (N,)`` and ``sources (N,)`` through
    Lightning (:class:`HeadTask`, one process on the CPU); keep the epoch with the best macro-F1 on
    ``val_feats (M, d, 3, 3)`` / ``val_labels (M,)`` (ties: the lower validation loss)."""
    torch.manual_seed(seed)  # the head's initial weights and dropout
    if spec.global_pool:
        feats = np.asarray(feats, dtype=np.float32).mean(axis=(3, 4), keepdims=True)
        val_feats = np.asarray(val_feats, dtype=np.float32).mean(axis=(2, 3), keepdims=True)
    head = make_head(feats.shape[2], num_classes=num_classes, cells=1 if spec.global_pool else 9)
    src_names = sorted(set(sources))
    adv = ConditionalAdversary(head[2].out_features, num_classes, len(src_names), spec.adversary) \
        if spec.adversary > 0 else None
    task = HeadTask(head, adv, feats, labels, torch.as_tensor([src_names.index(s) for s in sources]), val_feats, val_labels,
                    spec.lr, spec.weight_decay)
    batches = ResampledEpochs(sampling_weights(labels.tolist(), sources, spec.balance),
                              feats.shape[0] if spec.augment else 1, spec.batch_size, seed)
    with tempfile.TemporaryDirectory(prefix="pulmo-head-") as tmp:
        best = ModelCheckpoint(dirpath=tmp, monitor="val_key", mode="max", save_top_k=1, filename="best",
                               save_on_train_epoch_end=True)
        trainer = L.Trainer(max_epochs=spec.epochs, **Launch(accelerator="cpu").trainer_kwargs(), callbacks=[best],
                            logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            limit_val_batches=0)
        with quiet_lightning():
            # its own generator: the loader's per-epoch seed must not draw on the global stream that dropout uses
            trainer.fit(task, DataLoader(batches, batch_size=None, generator=torch.Generator()))
        best_epoch = restore_best(task, best)
    assert best_epoch is not None
    val_logits = head_logits(head, val_feats)
    return HeadResult(gap_to_grid(head) if spec.global_pool else head.eval(), best_epoch + 1, val_logits, task.history)


__all__ = ["HeadResult", "HeadSpec", "HeadTask", "ResampledEpochs", "gap_to_grid", "head_logits", "hidden_activations",
           "make_head", "sampling_weights", "train_head"]
