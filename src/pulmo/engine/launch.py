"""Where a training run runs: devices, distributed strategy and nodes (Lightning's own
launchers do the work), and the check that every process ended with the same weights.

``pulmo train CONFIG --devices 2 --strategy ddp`` on a CPU machine starts two processes that
average gradients over gloo; on GPUs the same flags use NCCL; ``--num-nodes M`` with the
cluster environment Lightning detects (SLURM, torchelastic, or ``MASTER_ADDR``/``NODE_RANK``
set by hand) spans machines. Only rank 0 scores the test split and writes the run folder.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from pulmo.errors import ConfigError

STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp")


@dataclass(frozen=True)
class Launch:
    """``devices``: processes (or GPUs) per node, ``"auto"`` for all; ``strategy``: one of
    :data:`STRATEGIES`; ``num_nodes``: machines; ``accelerator``: ``auto``, ``cpu`` or ``gpu``."""

    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.devices != "auto" and int(self.devices) < 1:
            raise ConfigError(f"--devices must be at least 1 (or auto), got {self.devices}")
        if self.num_nodes < 1:
            raise ConfigError(f"--num-nodes must be at least 1, got {self.num_nodes}")

    def trainer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``lightning.Trainer``. Also quiets Lightning's info lines (tips,
        "`Trainer.fit` stopped"): pulmo prints its own progress and results."""
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
        return {"devices": self.devices, "strategy": self.strategy, "num_nodes": self.num_nodes,
                "accelerator": self.accelerator}


#: Lightning warnings that say nothing to a pulmo user: single-process data loading is the
#: design here, our step-based datasets define ``__len__`` on purpose, a frozen backbone stays in
#: eval mode, the detector validates only every ``train.eval_every`` epochs (the best-epoch
#: checkpoint finds no figure in between), and two deprecations are inside Lightning itself.
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*`IterableDataset` has `__len__` defined.*",
    ".*module\\(s\\) in eval mode.*",
    ".*could not find the monitored key.*",
    ".*LeafSpec.*is deprecated.*",
    ".*all_gather is deprecated.*",
)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within it, :data:`QUIET_WARNINGS` are not shown (every other warning is)."""
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", pattern)
        yield


def process_share(n: int) -> slice:
    """The items of ``n`` (one epoch's plan) this process takes: in a distributed run an equal
    contiguous share per process (the remainder of the division dropped, so that every process
    runs the same number of batches), all of them otherwise."""
    if not torch.distributed.is_initialized():
        return slice(0, n)
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    share = n // world
    return slice(rank * share, (rank + 1) * share)


def selection_value(value: float) -> torch.Tensor:
    """``value`` as a float64 tensor, for a figure a checkpoint or early stopping compares
    across epochs: Lightning stores a plain float as float32, which would merge values that
    differ beyond the seventh digit (a tie-break by 1e-9 x the loss, two close losses) and let
    the earlier epoch win where the plain loops this engine replaced kept the better one."""
    return torch.tensor(value, dtype=torch.float64)


def restore_best(task: L.LightningModule, checkpoint: ModelCheckpoint) -> int | None:
    """Load the weights ``checkpoint`` kept (its best ``monitor`` value) into ``task``; returns
    the 0-based epoch they are from, ``None`` where nothing was saved."""
    if not checkpoint.best_model_path:
        return None
    saved = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    task.load_state_dict(saved["state_dict"])
    return int(saved["epoch"])


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names and float32 bytes), independent of the process."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def ranks_agree(trainer: L.Trainer, module: torch.nn.Module) -> dict[str, Any] | None:
    """Every process's weights hash, gathered from all of them (a collective: every rank must
    call it). Returns ``{"world_size", "weights_sha256": [one per rank], "agree"}`` in a
    multi-process run, ``None`` in a single-process one."""
    if trainer.world_size < 2:
        return None
    own = torch.tensor(list(bytes.fromhex(weights_sha256(module))), dtype=torch.int64)
    with quiet_lightning():
        gathered = trainer.strategy.all_gather(own).reshape(trainer.world_size, -1).cpu()
    hashes = [bytes(row.tolist()).hex() for row in gathered]
    return {"world_size": trainer.world_size, "weights_sha256": hashes, "agree": len(set(hashes)) == 1}


__all__ = ["Launch", "QUIET_WARNINGS", "STRATEGIES", "process_share", "quiet_lightning", "ranks_agree", "restore_best",
           "selection_value", "weights_sha256"]
