"""Load ViT / DeiT weights from a file the user gives (nothing is downloaded).

Accepted layouts: a plain state dict (timm's ``.pth`` / ``.bin`` files, ``torch.save``
of ``model.state_dict()``), or a dict holding one under ``model`` (the official DeiT
release), ``state_dict`` or ``model_ema``; a ``module.`` prefix (DataParallel) is removed.
Weights saved at another input size or channel count are adapted with timm's own
helpers: the position embedding is resampled to the new patch grid and the patch
projection is adapted to the new channel count. A classifier head of another class count
is left at its fresh initialisation. Every key that is missing, unexpected, adapted or
skipped is reported; any other shape mismatch is an error naming each tensor.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv
from torch import nn

from pulmo.errors import CheckpointError

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("model", "state_dict", "model_ema")
HEAD_PREFIXES = ("head.", "head_dist.")


@dataclass
class WeightReport:
    """What a pretrained file gave the model, key by key."""

    path: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.loaded} tensors loaded from {self.path}"]
        for name in ("missing", "unexpected", "adapted", "skipped"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name}: {', '.join(keys)}")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from the layouts above."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file not found: {path}")
    try:
        raw: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"cannot read pretrained weights {path}: {err}") from None
    for key in WRAPPER_KEYS:
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def _square_grid(tokens: int) -> list[int] | None:
    side = math.isqrt(tokens)
    return [side, side] if side * side == tokens else None


def load_vit_weights(vit: nn.Module, path: str | Path) -> WeightReport:
    """Copy the weights in ``path`` into the timm ViT ``vit`` and report what happened."""
    state = read_state_dict(path)
    own = vit.state_dict()
    report = WeightReport(str(path))
    mismatched, fresh = [], set()
    for key in list(state):
        if key not in own or state[key].shape == own[key].shape:
            continue
        if key == "pos_embed":
            prefix = getattr(vit, "num_prefix_tokens", 1)
            old_grid = _square_grid(state[key].shape[1] - prefix)
            if old_grid is None:
                mismatched.append(f"{key} {tuple(state[key].shape)} -> {tuple(own[key].shape)}")
                continue
            state[key] = resample_abs_pos_embed(
                state[key], new_size=list(vit.patch_embed.grid_size), old_size=old_grid, num_prefix_tokens=prefix
            )
            report.adapted.append(f"{key} (grid {old_grid[0]}x{old_grid[1]} -> {vit.patch_embed.grid_size[0]}x{vit.patch_embed.grid_size[1]})")
        elif key == "patch_embed.proj.weight" and state[key].shape[2:] == own[key].shape[2:]:
            state[key] = adapt_input_conv(own[key].shape[1], state[key])
            report.adapted.append(f"{key} (input channels -> {own[key].shape[1]})")
        elif key.startswith(HEAD_PREFIXES):
            del state[key]
            fresh.add(key)
            report.skipped.append(f"{key} (class count differs: left at initialisation)")
        else:
            mismatched.append(f"{key} {tuple(state[key].shape)} -> {tuple(own[key].shape)}")
    if mismatched:
        raise CheckpointError(f"pretrained weights {path} do not fit the model: " + "; ".join(mismatched))
    if not set(state) & set(own):
        raise CheckpointError(f"pretrained weights {path} share no tensor name with the model: not a ViT/DeiT file?")
    result = vit.load_state_dict(state, strict=False)
    report.missing = sorted(set(result.missing_keys) - fresh)
    report.unexpected = sorted(result.unexpected_keys)
    report.loaded = len(set(state) & set(own))
    log.warning("pretrained ViT weights: %s", report.summary())
    return report
