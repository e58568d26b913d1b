import numpy as np
import pytest
import timm
import torch

from pulmo.errors import CheckpointError, ConfigError
from pulmo.explain.gradcam import grad_cam, overlay
from pulmo.models import create_model
from pulmo.models.efficientnet import imagenet_weights_file, to_timm_layout
from pulmo.models.vbreathnet import keras_parameter_count


def test_vbreathnet_shape_and_paper_parameter_count():
    model = create_model("vbreathnet", num_classes=3, in_chans=3)
    assert sum(p.numel() for p in model.parameters()) == 790_307
    assert keras_parameter_count(model) == 792_291  # the paper's count (Keras includes BN moving stats)
    gray = create_model("vbreathnet", num_classes=3, in_chans=1)
    assert keras_parameter_count(gray) == 792_291 - 2 * 9 * 128  # 1 input channel instead of 3
    for size in (256, 128, 64):
        assert model(torch.randn(2, 3, size, size)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 64, 64))


@pytest.mark.parametrize("backbone, trainable", [("mobilenet_v2", 1_475_075), ("densenet121", 1_180_163), ("vgg16", 590_339)])
def test_transfer_heads_match_the_papers_trainable_split(backbone, trainable):
    model = create_model("transfer", backbone=backbone, num_classes=3)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert not model.backbone.training  # frozen batch-norm statistics
    if backbone == "vgg16":
        assert sum(p.numel() for p in model.parameters()) == 15_305_027  # paper's VGG16 total


def test_lite0_package_weights_load_and_differ_from_random():
    torch.manual_seed(0)
    pre = create_model("transfer", backbone="efficientnet_lite0", pretrained="package").eval()
    rand = create_model("transfer", backbone="efficientnet_lite0").eval()
    state = torch.load(imagenet_weights_file(), map_location="cpu", weights_only=True)
    conv = to_timm_layout(state, timm.create_model("tf_efficientnet_lite0").state_dict())
    assert conv["blocks.2.1.conv_pw.weight"].shape == state["_blocks.4._expand_conv.weight"].shape
    torch.testing.assert_close(pre.backbone[0].weight, state["_conv_stem.weight"])
    x = torch.randn(1, 3, 96, 96)
    assert not torch.allclose(pre.features(x), rand.features(x))


def test_transfer_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_model("transfer", backbone="resnet9000")
    with pytest.raises(ConfigError, match="only available for efficientnet_lite0"):
        create_model("transfer", backbone="mobilenet_v2", pretrained="package")
    with pytest.raises(CheckpointError, match="pretrained weights file not found"):
        create_model("transfer", backbone="mobilenet_v2", pretrained=str(tmp_path / "w.pth"))
    torch.save({"features.0.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="does not fit mobilenet_v2: size mismatch for features.0.0.weight"):
        create_model("transfer", backbone="mobilenet_v2", pretrained=str(tmp_path / "bad.pth"))
    torch.save({"features.0.0.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "part.pth")
    with pytest.raises(CheckpointError, match=r"does not fit mobilenet_v2: \d+ backbone tensors missing, e.g. \[.features.0.1.weight."):
        create_model("transfer", backbone="mobilenet_v2", pretrained=str(tmp_path / "part.pth"))


def test_transfer_loads_a_user_weights_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.mobilenet_v2(weights=None)
    torch.save(ref.state_dict(), tmp_path / "mnv2.pth")
    model = create_model("transfer", backbone="mobilenet_v2", pretrained=str(tmp_path / "mnv2.pth"))
    torch.testing.assert_close(model.backbone[0][0].weight, ref.features[0][0].weight)


def _blob_batch(n, rng):
    """Class 0: bright blob on the left half; class 1: on the right half. (n, 1, 64, 64)."""
    x = np.zeros((n, 1, 64, 64), np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        cx = rng.integers(8, 24) + 32 * y[i]
        cy = rng.integers(12, 52)
        x[i, 0, cy - 6:cy + 6, cx - 6:cx + 6] = 1.0
    return torch.from_numpy(x), torch.from_numpy(y)


def test_gradcam_has_the_input_size_and_points_at_the_evidence():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model("vbreathnet", num_classes=2, in_chans=1, filters=[8, 8, 8, 8], dense=16, conv_dropout=0.0, dense_dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(60):
        x, y = _blob_batch(16, rng)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = _blob_batch(1, np.random.default_rng(5))
    heat = grad_cam(model, x, int(y))
    assert heat.shape == (64, 64) and heat.dtype == np.float32
    assert heat.max() > heat.min() and 0 <= heat.min() and heat.max() <= 1
    blob = x[0, 0].numpy() > 0.5
    assert heat[blob].mean() > heat[~blob].mean()
    assert overlay(x[0, 0].numpy(), heat).shape == (64, 64, 3)


def test_gradcam_works_through_a_frozen_backbone():
    model = create_model("transfer", backbone="mobilenet_v2", in_chans=1)
    heat = grad_cam(model, torch.rand(1, 1, 96, 96))
    assert heat.shape == (96, 96) and np.isfinite(heat).all()
    assert not any(p.requires_grad for p in model.backbone.parameters())
