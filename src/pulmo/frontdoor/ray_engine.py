"""``pulmo analyze FOLDER --engine ray``: the front door over a Ray cluster (Ray Data).

The files become a Ray dataset of paths; ``map_batches`` runs :class:`FileAnalyzer`, a
callable class, so each Ray worker loads the models once and keeps them for every file it
is given. Each file's :class:`~pulmo.frontdoor.batch.Outcome` (result JSON, figures, or the
reason it was refused) comes back to the machine that started the run, in the order of the
files, and is written there exactly as the local engine writes it: the outputs are the same
file for file.

Workers read the input paths themselves, so on a real cluster every node must see the files
under the same path (a shared filesystem) and have pulmo installed. ``$PULMO_*`` settings of
the starting process (``PULMO_RUNTIME``, ``PULMO_DATA``...) are passed to the workers.
Needs the ``ray`` extra (``pip install 'pulmo[ray]'``).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pulmo.errors import ConfigError
from pulmo.frontdoor.batch import Outcome, analyze_one

#: files per batch handed to a worker: small, so that the progress bar moves and work spreads evenly
BATCH_FILES = 2


class FileAnalyzer:
    """One per Ray worker: analyses batches of ``{"index", "path", "absolute"}`` rows with the
    models it loaded on its first file (the front door caches them per process).

    Where the starting process's working folder ``cwd`` exists on the worker's machine, the
    worker works there and reads each path as the user gave it (so refusals word it the same
    way as a local run); elsewhere it reads the absolute path."""

    def __init__(self, task: str | None, checkpoint: str | None, options: dict[str, Any], cwd: str) -> None:
        self.task, self.checkpoint, self.options = task, checkpoint, options
        self.same_folder = Path(cwd).is_dir()
        if self.same_folder:
            os.chdir(cwd)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = batch["path"] if self.same_folder else batch["absolute"]
        outcomes = [pickle.dumps(analyze_one(Path(str(p)), self.task, self.checkpoint, self.options)) for p in paths]
        return {"index": batch["index"], "outcome": np.array(outcomes, dtype=object)}


def _connect(address: str | None, workers: int | None) -> None:
    """Join the cluster at ``address`` (``auto``: the one this machine belongs to), or start a
    local one with ``workers`` CPUs; quiet either way (the caller shows progress)."""
    import ray

    if ray.is_initialized():
        return
    env = {k: v for k, v in os.environ.items() if k.startswith("PULMO_") or k in ("HF_HUB_OFFLINE", "YOLO_OFFLINE")}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False,
                              "logging_level": logging.ERROR, "configure_logging": False}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, **kwargs)
    except ConnectionError as err:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({err})") from None


def ray_outcomes(paths: Sequence[Path], task: str | None, checkpoint: str | None, options: dict[str, Any],
                 address: str | None = None, workers: int | None = None) -> Iterator[Outcome]:
    """The :class:`Outcome` of every file in ``paths``, in order, computed by ``workers`` Ray
    workers (default: one per CPU of the cluster) of the cluster at ``address`` (default: a
    local cluster started for this run). Checks the options and joins the cluster at once;
    the files are analysed as the returned iterator is read.

    Raises:
        ConfigError: Ray is not installed, ``workers`` < 1, or no cluster answers at ``address``.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'pulmo[ray]'") from None
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    _connect(address, workers)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    n_workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    items = [{"index": i, "path": str(p), "absolute": str(Path(p).resolve())} for i, p in enumerate(paths)]
    ds = ray.data.from_items(items).map_batches(
        FileAnalyzer, fn_constructor_kwargs={"task": task, "checkpoint": checkpoint, "options": options,
                                             "cwd": os.getcwd()},
        batch_size=BATCH_FILES, concurrency=min(n_workers, len(items)), num_cpus=1, batch_format="numpy")
    return _in_order(ds.iter_rows(), paths)


def _in_order(rows: Iterator[dict[str, Any]], paths: Sequence[Path]) -> Iterator[Outcome]:
    for i, row in enumerate(rows):
        if int(row["index"]) != i:  # preserve_order guarantees this; a silent reorder would mislabel files
            raise RuntimeError(f"Ray returned file {row['index']} where file {i} was expected")
        outcome: Outcome = pickle.loads(row["outcome"])
        outcome.result["input"]["path"] = str(paths[i])  # as the user gave it, like the local engine
        yield outcome


__all__ = ["BATCH_FILES", "FileAnalyzer", "ray_outcomes"]
