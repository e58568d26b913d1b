"""Self-describing checkpoints (DESIGN rule 3).

A checkpoint is one ``torch.save`` file holding a dict of plain values and tensors:
labels, the audio and feature configs, the model's registry name and arguments, the
weights, the metrics reached, the resolved experiment config, the git commit and the
pulmo version. Loading needs nothing else.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import pulmo
from pulmo.config import AudioConfig, ExperimentConfig
from pulmo.engine.task import AudioClassifier
from pulmo.errors import CheckpointError
from pulmo.hashing import sha256_file
from pulmo.features import create_features
from pulmo.models import create_model

FORMAT = "pulmo-checkpoint/1"


def git_commit() -> str:
    """The source tree's commit (with ``-dirty`` if it has changes), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def file_hash(path: str | Path) -> str:
    """First 12 hex digits of the file's SHA-256 (:func:`pulmo.hashing.sha256_file`)."""
    return sha256_file(path)[:12]


def half_precision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors as fp16 (the bundled-model storage format); others unchanged."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def save_checkpoint(
    path: str | Path,
    net: AudioClassifier,
    config: ExperimentConfig,
    labels: list[str],
    metrics: dict[str, Any],
    half: bool = False,
) -> Path:
    """Write ``net`` and everything needed to use it; ``half`` stores weights as fp16."""
    state = half_precision(net.state_dict()) if half else net.state_dict()
    bundle = {
        "task": config.task,
        "name": config.name,
        "labels": list(labels),
        "audio": asdict(config.audio),
        "features": {"name": net.features.name, "params": net.features.config_dict()},
        "model": {"name": config.model.name, "params": _model_params(config, labels, net)},
    }
    return write_checkpoint(path, bundle, state, metrics, config.to_dict())


def checkpoint_dict(fields: dict[str, Any], state_dict: dict[str, torch.Tensor],
                    metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``fields`` (a capability's own keys: ``task``, ``name``, ``labels``, ``model``, ...)
    with what every checkpoint carries: the format tag, the weights, the metrics, the resolved
    config, the git commit, the pulmo version and the time."""
    return {
        "format": FORMAT,
        **fields,
        "state_dict": state_dict,
        "metrics": metrics,
        "config": config,
        "git_commit": git_commit(),
        "pulmo_version": pulmo.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_checkpoint(path: str | Path, fields: dict[str, Any], state_dict: dict[str, torch.Tensor],
                     metrics: dict[str, Any], config: dict[str, Any]) -> Path:
    """Save :func:`checkpoint_dict` of the arguments to ``path``. Returns ``path``."""
    return save_checkpoint_dict(path, checkpoint_dict(fields, state_dict, metrics, config))


def save_checkpoint_dict(path: str | Path, bundle: dict[str, Any]) -> Path:
    """Save a checkpoint dict to ``path`` (folders made as needed). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, path)
    return path


def _model_params(config: ExperimentConfig, labels: list[str], net: AudioClassifier) -> dict[str, Any]:
    """The model's constructor arguments. A pretrained-weights path is dropped (the weights
    are in the checkpoint) and a derived ``input_size`` is kept."""
    params = {k: v for k, v in config.model.params.items() if k != "pretrained"}
    params.update(num_classes=len(labels), in_chans=net.features.channels)
    if hasattr(net.model, "input_size"):
        params["input_size"] = list(net.model.input_size)
    return params


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dict, checked for format; weights stay as stored."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pulmo checkpoint ({FORMAT})")
    return bundle


def build_from_checkpoint(bundle: dict[str, Any]) -> tuple[AudioClassifier, AudioConfig]:
    """Rebuild the classifier (fp32, eval mode) and its audio config from a checkpoint dict."""
    features = create_features(bundle["features"]["name"], **bundle["features"]["params"])
    model = create_model(bundle["model"]["name"], **bundle["model"]["params"])
    net = AudioClassifier(features, model)
    state = {k: v.float() if v.is_floating_point() else v for k, v in bundle["state_dict"].items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint weights do not fit its model: {err}") from None
    return net.eval(), AudioConfig(**bundle["audio"])
