"""Chest X-ray across sources: calibration, abstention, source-aware sampling, grouped splits,
harmonising views, and ``evaluate --task cxr`` reporting gate refusals and "uncertain"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pulmo.cxr.calibration import (calibrated_proba, coverage_threshold, expected_calibration_error, fit_temperature,
                                   selective_scores)
from pulmo.cxr.harmonize import harmonize_view
from pulmo.cxr.heads import HeadSpec, head_logits, make_head, sampling_weights, train_head
from pulmo.cxr.protocol import grouped_split, source_probe, source_scores
from tests.frontdoor_fixtures import baggage_like, chest_phantom, image_file


def overconfident(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits ten times too sharp for a 70 %-accurate 3-class classifier whose wrong answers
    have smaller margins than its right ones."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    right = rng.random(n) < 0.7
    pred = np.where(right, y, (y + rng.integers(1, 3, n)) % 3)
    logits = rng.normal(0, 0.3, (n, 3))
    logits[np.arange(n), pred] += np.where(right, 1.2, 0.5)
    return logits * 10, y


def test_temperature_scaling_lowers_ece_on_overconfident_logits() -> None:
    logits, y = overconfident(4000)
    t = fit_temperature(logits[:2000], y[:2000])
    before = expected_calibration_error(calibrated_proba(logits[2000:]), y[2000:])
    after = expected_calibration_error(calibrated_proba(logits[2000:], t), y[2000:])
    assert t > 3 and before > 0.2 and after < before / 2


def test_coverage_threshold_and_selective_scores() -> None:
    logits, y = overconfident(seed=1)
    p = calibrated_proba(logits, fit_temperature(logits, y))
    thr = coverage_threshold(p, 0.8)
    s = selective_scores(p, y, thr, 3)
    assert s["abstention_rate"] == pytest.approx(0.2, abs=0.02)
    full = selective_scores(p, y, 0.0, 3)
    assert full["abstention_rate"] == 0 and s["selective_macro_f1"] > full["selective_macro_f1"]


def test_source_balanced_weights() -> None:
    labels = [0, 0, 0, 0, 1, 1]
    sources = ["a", "a", "a", "b", "a", "a"]
    w = sampling_weights(labels, sources, "source")
    assert w.sum() == pytest.approx(1)
    assert w[3] == pytest.approx(0.25) and w[:3].sum() == pytest.approx(0.25) and w[4:].sum() == pytest.approx(0.5)
    c = sampling_weights(labels, sources, "class")
    assert c[:4].sum() == pytest.approx(0.5) and c[3] == pytest.approx(0.125)


def test_grouped_split_keeps_patients_on_one_side() -> None:
    groups = [f"p{i // 3}" for i in range(90)]
    strata = [f"{i % 2}|s{i % 3}" for i in range(90)]
    tr, va = grouped_split(strata, groups, 0.15, seed=0)
    assert len(set(tr) | set(va)) == 90 and not {groups[i] for i in tr} & {groups[i] for i in va}
    assert 0.08 < len(va) / 90 < 0.25


def test_source_scores_one_class_source() -> None:
    sc = source_scores(np.array([0, 0, 0, 0]), np.array([0, 0, 1, 2]), 3)
    assert sc["macro_f1"] == pytest.approx(2 * 0.5 / 1.5) and sc["f1"][1] is None and sc["accuracy"] == 0.5


def test_source_probe_finds_a_planted_source_signal() -> None:
    rng = np.random.default_rng(0)
    src = np.repeat(["a", "b"], 60)
    groups = [f"g{i}" for i in range(120)]
    x = rng.normal(size=(120, 8))
    assert source_probe(x + 3 * (src == "a")[:, None], src, groups) > 0.95
    assert source_probe(x, src, groups) < 0.75


def test_harmonize_view_stays_gray_in_range() -> None:
    g = chest_phantom(128).astype(np.float32)
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = harmonize_view(g, rng)
        assert v.ndim == 2 and v.dtype == np.float32 and 0 <= v.min() and v.max() <= 1
        assert 0.7 * 128 <= v.shape[0] <= 128 and 0.7 * 128 <= v.shape[1] <= 128


def test_train_head_on_cached_features_with_adversary() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    feats = rng.normal(size=(2, 60, 4, 3, 3)).astype(np.float16)
    feats[:, :, 0] += y[None, :, None, None] * 2
    res = train_head(feats, y, ["a", "b"] * 30, feats[0, :15], y[:15],
                     HeadSpec(epochs=3, adversary=0.3), seed=0, num_classes=3)
    assert res.best_epoch in (1, 2, 3) and res.val_logits.shape == (15, 3)
    assert set(res.head.state_dict()) == set(make_head(4).state_dict())


def test_global_pool_head_becomes_the_equivalent_grid_head() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    feats = rng.normal(size=(2, 60, 4, 3, 3)).astype(np.float32)
    res = train_head(feats, y, ["a"] * 60, feats[0, :15], y[:15], HeadSpec(epochs=2, global_pool=True), seed=0)
    assert res.head[2].in_features == 36
    x = torch.from_numpy(feats[0, :15])
    gap = make_head(4, cells=1)
    gap.load_state_dict({**res.head.state_dict(), "2.weight": res.head[2].weight[:, ::9] * 9})
    torch.testing.assert_close(res.head.eval()(x), gap.eval()(x.mean((2, 3))), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(res.val_logits, res.head(x).detach().numpy(), atol=1e-5)


def test_train_head_keeps_the_best_validation_epoch() -> None:
    """Seed 1 ties macro-F1 on epochs 3-5 with a falling loss, and epoch 6 is worse: the head kept
    is epoch 5's (the tie broken by the loss, not the first or the last epoch)."""
    rng = np.random.default_rng(1)
    y, val_y = np.repeat([0, 1, 2], 20), np.repeat([0, 1, 2], 5)
    feats = rng.normal(size=(3, 60, 4, 3, 3)).astype(np.float32)
    feats[:, :, 0] += y[None, :, None, None]
    val = rng.normal(size=(15, 4, 3, 3)).astype(np.float32)
    val[:, 0] += val_y[:, None, None]
    res = train_head(feats, y, ["a", "b"] * 30, val, val_y, HeadSpec(epochs=6, lr=1e-2), seed=1)
    f1 = [h["val_macro_f1"] for h in res.history]
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4, 5, 6] and f1[2] == f1[3] == f1[4] == max(f1) > f1[5]
    assert res.best_epoch == 5
    logits = head_logits(res.head, val)  # the weights returned are epoch 5's
    np.testing.assert_array_equal(res.val_logits, logits)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.as_tensor(val_y))
    assert float(loss) == res.history[4]["val_loss"]


@pytest.fixture(scope="module")
def calibrated_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny V-BreathNet checkpoint (untrained) that carries a temperature and a threshold."""
    from pulmo.cxr.checkpoint import save_cxr_checkpoint
    from pulmo.cxr.config import CxrConfig
    from pulmo.cxr.train import build_model

    cfg = CxrConfig.from_dict({"name": "tiny", "image": {"size_px": 48},
                               "model": {"name": "vbreathnet", "params": {"filters": [4, 4, 4, 4], "dense": 8}}})
    torch.manual_seed(0)
    metrics = {"calibration": {"temperature": 2.0, "threshold": 0.99}}
    return save_cxr_checkpoint(tmp_path_factory.mktemp("m") / "tiny.pt", build_model(cfg).eval(), cfg, metrics)


def test_evaluate_counts_gate_refusals_and_uncertain(calibrated_checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from pulmo.cli import main

    for k, cls in enumerate(["Covid", "Normal", "Pneumonia"]):  # "Pneumonia" scores as "Viral Pneumonia"
        (tmp_path / cls).mkdir()
        for j in range(2):
            image_file(tmp_path / cls / f"{j}.png", chest_phantom(128, seed=10 * k + j))
    image_file(tmp_path / "Normal" / "bag.png", baggage_like(128), mode="RGB")
    from tests.test_dicom import write_dicom

    write_dicom(tmp_path / "Covid" / "scan.dcm", np.round(4095 - chest_phantom(128, seed=7) * 4095).astype(np.int64),
                bits=12, photometric="MONOCHROME1")
    assert main(["evaluate", "--task", "cxr", "--data", str(tmp_path), "--checkpoint", str(calibrated_checkpoint),
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out  # strict JSON: undefined figures are null
    rep = json.loads(out)
    assert rep["selective_macro_f1"] is None and rep["n"] == 8 and rep["n_gate_refused"] == 1 and rep["gate_refused"] == ["Normal/bag.png"]
    assert rep["abstention_rate"] == 1.0 and rep["n_answered"] == 0  # nothing reaches 0.99 confidence
    assert set(rep["f1"]) == {"Covid", "Normal", "Viral Pneumonia"} and rep["temperature"] == 2.0
    assert main(["evaluate", "--task", "cxr", "--data", str(tmp_path), "--checkpoint", str(calibrated_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "refused by the chest X-ray gate" in out and "Normal/bag.png" in out and "'uncertain'" in out


def test_analyze_says_uncertain_plainly(calibrated_checkpoint: Path, tmp_path: Path) -> None:
    from pulmo.frontdoor.cxr import CxrCapability

    img = image_file(tmp_path / "chest.png", chest_phantom(128))
    res = CxrCapability().analyze(img, checkpoint=str(calibrated_checkpoint))
    assert res.headline.startswith("uncertain: the model is not confident enough")
    assert res.result["label"] == "uncertain" and res.result["predicted"] in ("Covid", "Normal", "Viral Pneumonia")


def test_python_api_summary_says_uncertain(calibrated_checkpoint: Path) -> None:
    import pulmo

    pred = pulmo.load(calibrated_checkpoint).predict((chest_phantom(128) * 255).astype(np.uint8))
    assert pred.summary.startswith("uncertain (") and "most likely" in pred.summary
