import csv

import numpy as np
import pytest
import torch

from pulmo.cxr.balance import augment_batch, balanced_plan, sampler_weights, train_augment
from pulmo.cxr.config import CxrConfig, load_cxr_config
from pulmo.cxr.synthetic import write_xray_folder
from pulmo.data.adapters.image_folder import load_record_image, read_image_csv, read_image_folder, read_medmnist_npz
from pulmo.errors import ConfigError, DataError
from pulmo.metrics.classification import classification_report


def test_classification_report_matches_hand_computation():
    # true: A A A B B C ; pred: A A B B C C
    rep = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["A", "B", "C"])
    assert rep["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["precision"] == pytest.approx({"A": 1.0, "B": 0.5, "C": 0.5})
    assert rep["recall"] == pytest.approx({"A": 2 / 3, "B": 0.5, "C": 1.0})
    f1 = {"A": 0.8, "B": 0.5, "C": 2 / 3}
    assert rep["f1"] == pytest.approx(f1)
    assert rep["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    absent = classification_report([0, 0], [0, 1], ["A", "B"])  # class B has no true images
    assert absent["macro_f1"] == pytest.approx(2 / 3)  # F1 of A only


def test_balancing_by_augmentation_and_by_sampler_weights():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 2)
    idx, aug = balanced_plan(labels, 0, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10]
    assert aug.sum() == 6 + 8 and not aug[:16].any()  # originals once, then augmented top-ups
    idx, _ = balanced_plan(labels, 12, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [12, 12, 12]
    w = sampler_weights(labels)
    assert [float(w[labels == c].sum()) for c in range(3)] == pytest.approx([1.0, 1.0, 1.0])
    x = torch.rand(3, 1, 32, 32)
    out = augment_batch(x, train_augment(32, strong=True))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1 and not torch.equal(out, x)


def test_folder_adapter_with_and_without_split_level(tmp_path):
    flat = write_xray_folder(tmp_path / "flat", per_class=2, size_px=48)
    recs = read_image_folder(flat)
    assert len(recs) == 6 and {r.label for r in recs} == {"Covid", "Normal", "Viral Pneumonia"} and recs[0].split == ""
    nested = write_xray_folder(tmp_path / "nested", per_class=1, size_px=48, splits=("train", "test"))
    assert len(read_image_folder(nested)) == 6
    test = read_image_folder(nested, split="test")
    assert len(test) == 3 and {r.split for r in test} == {"test"}
    assert load_record_image(test[0]).shape == (48, 48)
    with pytest.raises(DataError, match="no split folder 'val'"):
        read_image_folder(nested, split="val")
    with pytest.raises(DataError, match="no images found"):
        read_image_folder(flat, classes=["Tuberculosis"])


def test_csv_and_medmnist_adapters(tmp_path):
    root = write_xray_folder(tmp_path / "imgs", classes=("Normal",), per_class=2, size_px=40)
    with (tmp_path / "list.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient", "split"])
        w.writerow(["imgs/Normal/000.png", "Normal", "p1", "train"])
        w.writerow([str(root / "Normal" / "001.png"), "Normal", "p2", "test"])
    recs = read_image_csv(tmp_path / "list.csv")
    assert [(r.patient_id, r.split) for r in recs] == [("p1", "train"), ("p2", "test")]
    assert load_record_image(recs[0]).shape == (40, 40)
    (tmp_path / "bad.csv").write_text("file,label\nx.png,A\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['path'\]"):
        read_image_csv(tmp_path / "bad.csv")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1))
    np.savez(tmp_path / "m.npz", **arrays)
    recs = read_medmnist_npz(tmp_path / "m.npz", ["Normal", "Pneumonia"])
    assert len(recs) == 10 and recs[7].split == "test" and recs[7].index == 0
    np.testing.assert_allclose(load_record_image(recs[7]), arrays["test_images"][0] / 255.0)
    assert recs[7].label == ["Normal", "Pneumonia"][int(arrays["test_labels"][0, 0])]


def test_every_shipped_cxr_experiment_loads():
    from pathlib import Path

    files = sorted(f for f in (Path(__file__).parents[1] / "configs/experiments/vbreathnet").glob("*.yaml") if f.name != "base.yaml")
    assert len(files) >= 10
    for f in files:
        cfg = load_cxr_config(f)
        if f.name.startswith("table"):
            assert cfg.paper, f"{f} must carry the paper's expected values"


def test_cxr_config_loads_strictly(tmp_path):
    (tmp_path / "base.yaml").write_text("image: {size_px: 64}\ntrain: {epochs: 3}\n")
    (tmp_path / "x.yaml").write_text("base: base.yaml\ngates: {blur_min: 50}\n")
    cfg = load_cxr_config(tmp_path / "x.yaml", {"train": {"seed": 4}})
    assert (cfg.name, cfg.image.size_px, cfg.train.epochs, cfg.train.seed, cfg.gates.blur_min) == ("x", 64, 3, 4, 50)
    assert CxrConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "typo.yaml").write_text("gates: {blur_mn: 50}\n")
    with pytest.raises(ConfigError, match="unknown key.*blur_mn"):
        load_cxr_config(tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match="contrast_min must be below"):
        CxrConfig.from_dict({"gates": {"contrast_min": 90, "contrast_max": 80}})
