"""Train the transfer head (:class:`pulmo.models.transfer.FrozenBackboneClassifier`'s ``head``)
on cached frozen-backbone features, with source-aware sampling and an optional source adversary.

Features come as ``(V, N, d, 3, 3)``: view 0 is the plain image, views ``1..V-1`` harmonising
augmentations (:func:`pulmo.cxr.features.view_features`). Each epoch draws ``N`` training images
with probability proportional to their sampling weight (:func:`sampling_weights`) and, with
``augment``, a random augmented view of each. The epoch kept is the one with the best
validation macro-F1 (then lowest validation loss).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

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


def train_head(feats: np.ndarray, labels: np.ndarray, sources: Sequence[str], val_feats: np.ndarray,
               val_labels: np.ndarray, spec: HeadSpec, seed: int = 0, num_classes: int = 3) -> HeadResult:
    """Train a head on ``feats (V, N, d, 3, 3)`` with ``labels (N,)`` and ``sources (N,)``; keep the
    epoch with the best macro-F1 on ``val_feats (M, d, 3, 3)`` / ``val_labels (M,)``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_views, n = feats.shape[0], feats.shape[1]
    if spec.global_pool:
        feats = np.asarray(feats, dtype=np.float32).mean(axis=(3, 4), keepdims=True)
        val_feats = np.asarray(val_feats, dtype=np.float32).mean(axis=(2, 3), keepdims=True)
    head = make_head(feats.shape[2], num_classes=num_classes, cells=1 if spec.global_pool else 9)
    src_names = sorted(set(sources))
    src_idx = torch.as_tensor([src_names.index(s) for s in sources])
    adv = ConditionalAdversary(head[2].out_features, num_classes, len(src_names), spec.adversary) \
        if spec.adversary > 0 else None
    params = list(head.parameters()) + (list(adv.parameters()) if adv is not None else [])
    opt = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    w = sampling_weights(labels.tolist(), sources, spec.balance)
    y = torch.as_tensor(labels, dtype=torch.long)
    present = sorted(set(val_labels.tolist()))
    best: tuple[float, float, int, dict[str, torch.Tensor], np.ndarray] | None = None
    history = []
    for epoch in range(spec.epochs):
        head.train()
        idx = rng.choice(n, size=n, replace=True, p=w)
        view = rng.integers(1, n_views, n) if spec.augment and n_views > 1 else np.zeros(n, dtype=int)
        for b in range(0, n, spec.batch_size):
            bi, bv = idx[b:b + spec.batch_size], view[b:b + spec.batch_size]
            if len(bi) < 2:
                continue
            x = torch.from_numpy(feats[bv, bi]).float()
            hidden = head[:4](x)
            loss = F.cross_entropy(head[4:](hidden), y[bi])
            if adv is not None:
                loss = loss + adv.loss(hidden, y[bi], src_idx[bi])
            opt.zero_grad()
            loss.backward()
            opt.step()
        logits = head_logits(head, val_feats)
        val_loss = float(F.cross_entropy(torch.from_numpy(logits), torch.as_tensor(val_labels, dtype=torch.long)))
        f1 = float(f1_score(val_labels, logits.argmax(1), labels=present, average="macro", zero_division=0))
        history.append({"epoch": epoch + 1, "val_macro_f1": f1, "val_loss": val_loss})
        if best is None or (f1, -val_loss) > best[:2]:
            best = (f1, -val_loss, epoch + 1, copy.deepcopy(head.state_dict()), logits)
    assert best is not None
    head.load_state_dict(best[3])
    return HeadResult(gap_to_grid(head) if spec.global_pool else head.eval(), best[2], best[4], history)


__all__ = ["HeadResult", "HeadSpec", "gap_to_grid", "head_logits", "hidden_activations", "make_head", "sampling_weights",
           "train_head"]
