"""Conv-ViT (Neto et al.): CBAM, the three-branch block, stacked features, pretrained weights, a smoke run."""

import itertools
import json

import numpy as np
import pytest
import timm
import torch

from pulmo.config import ExperimentConfig
from pulmo.data.adapters.synthetic import write_icbhi_folder
from pulmo.engine.checkpoint import build_from_checkpoint, read_checkpoint
from pulmo.engine.train import build_net, run_experiment
from pulmo.errors import CheckpointError, ConfigError, DataError
from pulmo.features import create_features
from pulmo.features.stack import STACKABLE
from pulmo.models import create_model
from pulmo.models.conv_vit import BranchConv
from pulmo.models.layers.cbam import CBAM

SMALL_FEATURES = {"n_bins": 32, "n_fft": 512, "hop_length": 128, "fmin_hz": 50.0, "fmax_hz": 2000.0}


def test_cbam_follows_equations_11_and_12_keeps_shape_and_passes_gradients():
    torch.manual_seed(0)
    cbam = CBAM(6, reduction=2)
    x = torch.randn(2, 6, 9, 11, requires_grad=True)
    mlp = cbam.channel.mlp
    m_c = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]  # eq. 11
    f1 = m_c * x
    pooled = torch.stack([f1.mean(1), f1.amax(1)], dim=1)
    m_s = torch.sigmoid(torch.nn.functional.conv2d(pooled, cbam.spatial.conv.weight, cbam.spatial.conv.bias, padding=3))
    out = cbam(x)
    torch.testing.assert_close(out, m_s * f1)  # eq. 12 applied to the channel-refined map
    assert out.shape == x.shape and cbam.spatial.conv.kernel_size == (7, 7)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cbam.parameters())


def test_three_branch_block_keeps_size_and_keeps_channels_apart():
    block = BranchConv(3)
    x = torch.randn(2, 3, 17, 23, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out[:, 0].sum().backward()
    assert x.grad[:, 0].abs().sum() > 0
    assert torch.equal(x.grad[:, 1:], torch.zeros_like(x.grad[:, 1:]))  # channel 0 sees only input 0
    assert all(p.grad is not None for p in block.parameters())


@pytest.mark.parametrize("parts", [list(c) for r in (1, 2, 3) for c in itertools.combinations(STACKABLE, r)])
def test_model_runs_on_every_feature_combination(parts):
    config = ExperimentConfig.from_dict({
        "audio": {"sample_rate_hz": 8000, "cycle_seconds": 1.0, "band_low_hz": 50, "pad": "repeat"},
        "features": {"name": "stack", "params": {"parts": parts, **SMALL_FEATURES}},
        "model": {"name": "conv_vit", "params": {"vit": "deit_tiny_patch16_224"}},
    })
    net = build_net(config, 4)
    assert net.features.channels == len(parts)
    assert net.model.input_size == (32, 1 + 8000 // 128)
    logits = net(torch.randn(2, 8000))
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()


def test_stacked_features_reject_unknown_or_empty_parts():
    with pytest.raises(ConfigError, match="parts"):
        create_features("stack", parts=["mel", "wavelet"])
    with pytest.raises(ConfigError, match="parts"):
        create_features("stack", parts=[])
    with pytest.raises(ConfigError, match="fmax_hz"):
        create_features("stack", sample_rate_hz=4000, fmax_hz=3000.0)


def test_mismatched_input_size_is_a_clear_error():
    model = create_model("conv_vit", num_classes=4, in_chans=3, input_size=(32, 48))
    with pytest.raises(DataError, match=r"built for inputs \(B, 3, 32, 48\).*got \(1, 3, 32, 40\)"):
        model(torch.randn(1, 3, 32, 40))
    with pytest.raises(DataError, match="got"):
        model(torch.randn(1, 1, 32, 48))


def _deit_file(tmp_path, name, wrap=None, drop=(), extra=()):
    state = timm.create_model(name, pretrained=False).state_dict()  # ImageNet layout: 224x224, 3 channels, 1000 classes
    for key in drop:
        del state[key]
    for key in extra:
        state[key] = torch.zeros(3)
    path = tmp_path / f"{name}.pth"
    torch.save({wrap: state} if wrap else state, path)
    return path, state


@pytest.mark.parametrize("wrap", [None, "model"])  # timm state dict, official DeiT release layout
def test_pretrained_file_loads_and_reports_missing_extra_adapted_and_skipped_keys(tmp_path, wrap):
    path, state = _deit_file(tmp_path, "deit_tiny_patch16_224", wrap, drop=["norm.weight"], extra=["teacher.bias"])
    model = create_model("conv_vit", num_classes=4, in_chans=3, input_size=(32, 48), pretrained=str(path))
    report = model.pretrained_report
    assert report.missing == ["norm.weight"] and report.unexpected == ["teacher.bias"]
    assert any(a.startswith("pos_embed (grid 14x14 -> 2x3)") for a in report.adapted)
    assert [s.split()[0] for s in report.skipped] == ["head.weight", "head.bias"]
    torch.testing.assert_close(model.vit.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert "missing: norm.weight" in report.summary()


def test_pretrained_with_other_channel_count_is_adapted(tmp_path):
    path, _ = _deit_file(tmp_path, "deit_tiny_patch16_224")
    model = create_model("conv_vit", num_classes=4, in_chans=2, input_size=(32, 48), pretrained=str(path))
    assert any(a.startswith("patch_embed.proj.weight") for a in model.pretrained_report.adapted)


def test_pretrained_of_another_width_or_not_a_vit_is_a_clear_error(tmp_path):
    path, _ = _deit_file(tmp_path, "deit_small_patch16_224")
    with pytest.raises(CheckpointError, match=r"do not fit the model: .*cls_token \(1, 1, 384\) -> \(1, 1, 192\)"):
        create_model("conv_vit", num_classes=4, in_chans=3, input_size=(32, 48), pretrained=str(path))
    other = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), other)
    with pytest.raises(CheckpointError, match="share no tensor name"):
        create_model("conv_vit", num_classes=4, in_chans=3, input_size=(32, 48), pretrained=str(other))
    with pytest.raises(CheckpointError, match="not found"):
        create_model("conv_vit", num_classes=4, in_chans=3, input_size=(32, 48), pretrained=str(tmp_path / "nope.pth"))


def test_training_smoke_run_and_checkpoint_round_trip(tmp_path):
    root = write_icbhi_folder(tmp_path / "icbhi", n_patients=6, seed=3)
    pretrained, _ = _deit_file(tmp_path, "deit_tiny_patch16_224")
    config = ExperimentConfig.from_dict({
        "name": "conv-vit-smoke",
        "data": {"root": str(root), "val_fraction": 0.4},
        "audio": {"sample_rate_hz": 8000, "cycle_seconds": 1.0, "band_low_hz": 50, "pad": "repeat"},
        "features": {"name": "stack", "params": SMALL_FEATURES},
        "model": {"name": "conv_vit", "params": {"pretrained": str(pretrained)}},
        "loss": {"name": "class_balanced", "beta": 0.9},
        "train": {"max_epochs": 1, "batch_size": 4, "limit_train_batches": 2, "precision": "32", "optimizer": "adam",
                  "schedule": "constant", "lr": 1e-4, "precompute_features": True, "time_shift": True,
                  "spec_augment": True, "mixup_alpha": 0.4, "sampler": "device_balanced"},
    })
    out = tmp_path / "run"
    metrics = run_experiment(config, out, progress=False)
    assert metrics["pretrained"]["loaded"] > 100 and metrics["test"]["n"] == 8
    probs = np.load(out / "probabilities.npz")
    assert probs["test"].shape == (8, 4) and np.allclose(probs["test"].sum(1), 1, atol=1e-5)
    bundle = read_checkpoint(out / "model.pt")
    assert "pretrained" not in bundle["model"]["params"] and bundle["model"]["params"]["input_size"] == [32, 63]
    assert bundle["audio"]["pad"] == "repeat"
    net, audio = build_from_checkpoint(bundle)
    x = torch.randn(2, audio.cycle_samples)
    assert net(x).shape == (2, 4)
    assert json.loads((out / "metrics.json").read_text())["test"]["n"] == 8


def test_feature_cache_reuses_maps_for_the_same_inputs_only(tmp_path):
    from pulmo.engine.evaluate import extract_features

    fx = create_features("stack", sample_rate_hz=8000, **SMALL_FEATURES)
    waves = [np.random.default_rng(i).standard_normal(6000).astype(np.float32) for i in range(3)]
    first = extract_features(fx, waves, 8000, "repeat", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("stack-*.pt"))) == 1
    torch.testing.assert_close(extract_features(fx, waves, 8000, "repeat", cache_dir=tmp_path), first)
    torch.testing.assert_close(extract_features(fx, waves, 8000, "repeat"), first)
    extract_features(fx, waves[:2], 8000, "repeat", cache_dir=tmp_path)
    extract_features(fx, waves, 8000, "zero", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("stack-*.pt"))) == 3
