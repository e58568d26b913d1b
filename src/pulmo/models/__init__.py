"""Models by name from one registry (DESIGN rule 1).

Every model takes ``(B, C, F, T)`` input and returns ``(B, num_classes)`` logits, exposes
``num_classes`` and, for CNNs, ``cam_layer`` (the module Grad-CAM hooks).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from pulmo.errors import ConfigError
from pulmo.registry import Registry

MODELS: Registry[Any] = Registry("model")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model: ``create_model("resnet18_attn", attn="se", num_classes=4)``."""
    factory = model_factory(name)
    try:
        return factory(**kwargs)
    except TypeError as err:
        raise ConfigError(f"invalid arguments for model {name!r}: {err}") from None


def model_factory(name: str) -> Any:
    """The registered constructor for ``name`` (its signature lists the model's arguments)."""
    _import_all()
    return MODELS.get(name)


def model_names() -> list[str]:
    _import_all()
    return MODELS.names()


def _import_all() -> None:
    from pulmo.models import conv_vit, efficientnet, resnet_attn, rr_lstm, small_cnn, transfer, vbreathnet  # noqa: F401  (registers their models)
