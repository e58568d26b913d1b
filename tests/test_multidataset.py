"""ICBHI + KAUH training pieces: the KAUH adapter, patient folds, stethoscope-response
augmentation, MIL pooling, masked pretraining, and a tiny end-to-end run with bags."""

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pulmo.config import ExperimentConfig
from pulmo.data.adapters.kauh import load_kauh
from pulmo.data.adapters.synthetic import write_icbhi_folder
from pulmo.data.datasets import BagDataset
from pulmo.data.records import AudioRecord
from pulmo.data.splits import patient_folds
from pulmo.data.transforms.device import DeviceResponse, apply_device_response
from pulmo.engine.evaluate import recording_windows
from pulmo.engine.pretrain import load_pretrained_encoder, patch_mask, pretrain_encoder
from pulmo.engine.train import build_net, run_experiment
from pulmo.errors import ConfigError
from pulmo.losses.mil import BagPresenceLoss, bag_presence, window_presence

SR = 4000


def write_kauh_folder(root: Path, subjects: int = 6, seconds: float = 6.0) -> Path:
    """KAUH layout: labels.csv + audio/{BP,DP,EP}/<subject>.flac; subject 1's BP file is flagged."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(1, subjects + 1):
        crackle, wheeze = s % 2, int(s % 3 == 0)
        for mode in ("BP", "DP", "EP"):
            path = root / "audio" / mode / f"{s:03d}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.05 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR)
            rows.append({"path": f"audio/{mode}/{s:03d}.flac", "subject": s, "filter": mode, "diagnosis": "x",
                         "crackle": crackle, "wheeze": wheeze, "location": "P L",
                         "flags": "identical to another file" if (s, mode) == (1, "BP") else ""})
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_kauh_adapter_maps_labels_and_leaves_out_flagged_files(tmp_path):
    records = load_kauh(write_kauh_folder(tmp_path / "kauh"))
    assert len(records) == 17 and "kauh001_BP" not in {r.record_id for r in records}
    by_id = {r.record_id: r for r in records}
    assert by_id["kauh001_DP"].label == "crackle" and by_id["kauh003_EP"].label == "both"
    assert by_id["kauh002_BP"].label == "normal" and by_id["kauh006_BP"].label == "wheeze"
    assert {r.device for r in records} == {"Litt3200"} and by_id["kauh004_EP"].patient_id == "kauh004"


def test_patient_folds_are_disjoint_and_balanced_by_device():
    rng = np.random.default_rng(0)
    records = [
        AudioRecord(record_id=f"{p}_{c}", path="x", label=str(rng.choice(["normal", "crackle"])), patient_id=f"p{p}",
                    device=("A", "B", "C")[p % 3])
        for p in range(60) for c in range(int(rng.integers(2, 12)))
    ]
    folds = patient_folds(records, 5, seed=0)
    fold_of_patient: dict[str, set[int]] = {}
    for r, f in zip(records, folds, strict=True):
        fold_of_patient.setdefault(r.patient_id, set()).add(f)
    assert all(len(f) == 1 for f in fold_of_patient.values())  # patient-disjoint
    for device in "ABC":
        share = Counter(f for r, f in zip(records, folds, strict=True) if r.device == device)
        assert set(share) == set(range(5))  # every fold holds every device
        total = sum(share.values())
        assert max(share.values()) / total < 0.35  # no fold takes more than about its fifth
    assert patient_folds(records, 5, seed=0) == folds
    with pytest.raises(ValueError):
        patient_folds(records[:3], 5)


def test_device_response_keeps_length_and_shapes_the_spectrum_as_drawn():
    rng = np.random.default_rng(1)
    wave = rng.standard_normal(SR * 8).astype(np.float32)
    response = DeviceResponse(tilt_db_per_octave=-3.0, resonance_hz=150.0, resonance_gain_db=10.0, resonance_octaves=1.0,
                              rolloff_hz=600.0, rolloff_db_per_octave=24.0, noise_below_db=60.0)
    out = apply_device_response(wave, SR, response, rng)
    assert out.shape == wave.shape and out.dtype == np.float32
    assert np.isclose(np.sqrt(np.mean(out**2)), np.sqrt(np.mean(wave**2)), rtol=1e-3)  # level kept
    freqs = np.fft.rfftfreq(len(wave), 1 / SR)
    measured = 10 * np.log10(np.abs(np.fft.rfft(out)) ** 2 / np.abs(np.fft.rfft(wave)) ** 2)
    expected = response.gain_db(freqs)
    for f in (100.0, 150.0, 300.0, 600.0, 1200.0):  # relative gains (the output is renormalised)
        band = (freqs > f * 0.9) & (freqs < f * 1.1)
        ref = (freqs > 270) & (freqs < 330)
        got = np.median(measured[band]) - np.median(measured[ref])
        want = np.median(expected[band]) - np.median(expected[ref])
        assert abs(got - want) < 1.5, (f, got, want)
    assert response.gain_db(np.array([2400.0]))[0] < response.gain_db(np.array([600.0]))[0] - 20  # one octave of 24 dB roll-off


def test_mil_bag_label_is_its_most_abnormal_window():
    # three windows: normal, crackle, normal -> the bag holds crackles, no wheezes
    logits = torch.log(torch.tensor([[[0.9, 0.05, 0.04, 0.01], [0.1, 0.8, 0.05, 0.05], [0.97, 0.01, 0.01, 0.01]]]))
    probs = window_presence(logits, crackle=1, wheeze=2, both=3)
    assert torch.allclose(probs[0, 1], torch.tensor([0.85, 0.10]), atol=1e-5)
    bag = bag_presence(probs)
    assert torch.allclose(bag, torch.tensor([[0.85, 0.10]]), atol=1e-5)
    masked = bag_presence(probs, mask=torch.tensor([[True, False, True]]))
    assert masked[0, 0] < 0.1  # the crackle window is padding: no crackle
    loss = BagPresenceLoss(1, 2, 3)
    assert loss(logits, torch.tensor([[1.0, 0.0]])) < loss(logits, torch.tensor([[0.0, 1.0]]))


def test_bag_dataset_items_and_recording_windows():
    bags = BagDataset([np.arange(30000, dtype=np.float32), np.ones(4000, np.float32)], [(1, 0), (0, 0)], 10000, 4,
                      device_augment=1.0)
    item = bags[0]
    assert item["bag"].shape == (4, 10000) and item["presence"].tolist() == [1.0, 0.0]
    assert bags[1]["bag"].shape == (4, 10000)  # a short recording repeats to fill its windows
    windows = recording_windows(np.arange(27000.0), 10000)
    assert [w[0] for w in windows] == [0, 5000, 10000, 15000, 17000] and all(len(w) == 10000 for w in windows)


def _config(root: Path, **data) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "name": "tiny_multi",
        "data": {"root": str(root), "val_fraction": 0.4, **data},
        "audio": {"pad": "repeat"},
        "features": {"name": "mel", "params": {"window_ms": 64, "hop_ms": 40, "n_mels": 16, "normalise": "frequency"}},
        "model": {"name": "small_cnn", "params": {"widths": [4, 4, 8, 8]}},
        "train": {"max_epochs": 1, "batch_size": 4, "precision": "32", "device_augment": 0.5},
    })


def test_masked_pretraining_round_trip(tmp_path):
    assert patch_mask((16, 24), 3, torch.Generator().manual_seed(0)).shape == (3, 1, 16, 24)
    net = build_net(_config(tmp_path), 4)
    waves = [np.random.default_rng(i).standard_normal(20000).astype(np.float32) for i in range(3)]
    before = {k: v.clone() for k, v in net.model.encoder.state_dict().items()}
    info = pretrain_encoder(net, waves, 10000, steps=50, out=tmp_path / "enc.pt", batch_size=4, progress=False)
    assert len(info["loss_curve"]) == 1 and np.isfinite(info["loss_curve"][0])
    assert not torch.equal(before["0.0.weight"], net.model.encoder.state_dict()["0.0.weight"])  # the encoder trained
    fresh = build_net(_config(tmp_path), 4)
    load_pretrained_encoder(fresh, tmp_path / "enc.pt")
    for a, b in zip(fresh.model.encoder.state_dict().values(), net.model.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = ExperimentConfig.from_dict({**_config(tmp_path).to_dict(), "features": {"name": "mel", "params": {"n_mels": 32}}})
    with pytest.raises(ConfigError, match="pretrained with"):
        load_pretrained_encoder(build_net(other, 4), tmp_path / "enc.pt")


@pytest.mark.parametrize("protocol", ["official", "pooled_cv"])
def test_run_with_kauh_bags_reports_both_datasets(tmp_path, protocol):
    icbhi = write_icbhi_folder(tmp_path / "icbhi", n_patients=8, seed=3)
    write_kauh_folder(tmp_path / "kauh", subjects=10)
    config = _config(icbhi, extra=["kauh"], evaluate_on=["kauh"], protocol=protocol, fold=1, bag_windows=2)
    metrics = run_experiment(config, tmp_path / "run", progress=False)
    sizes = metrics["data"]["sizes"]
    assert sizes["kauh_train"] + sizes["kauh_test"] == 29 and sizes["kauh_test"] > 0
    assert metrics["kauh_test"]["n"] == sizes["kauh_test"] and 0 <= metrics["kauh_test"]["adventitious"]["auc"] <= 1
    test_p = {json.loads(x)["patient_id"] for x in (tmp_path / "run/splits/test.jsonl").read_text().splitlines()}
    train_p = {json.loads(x)["patient_id"] for x in (tmp_path / "run/splits/train.jsonl").read_text().splitlines()}
    assert test_p and not test_p & train_p
    logged = (tmp_path / "run/logs/metrics.csv").read_text()
    assert "train_bag_loss" in logged


def test_device_adversary_trains_beside_the_classifier(tmp_path):
    icbhi = write_icbhi_folder(tmp_path / "icbhi", n_patients=8, seed=3)
    config = ExperimentConfig.from_dict({**_config(icbhi).to_dict(), "train": {
        **_config(icbhi).to_dict()["train"], "device_adversary": 0.5}})
    metrics = run_experiment(config, tmp_path / "run", progress=False)
    assert metrics["test"]["n"] > 0
    assert "train_device_loss" in (tmp_path / "run/logs/metrics.csv").read_text()


def test_config_refuses_device_augmentation_it_could_not_apply():
    with pytest.raises(ConfigError, match="mixup"):
        ExperimentConfig.from_dict({"train": {"device_adversary": 0.5, "mixup_alpha": 0.2}})
    with pytest.raises(ConfigError, match="weight >= 0"):
        ExperimentConfig.from_dict({"train": {"device_adversary": -1.0}})
    with pytest.raises(ConfigError, match="precompute_features"):
        ExperimentConfig.from_dict({"train": {"device_augment": 0.5, "precompute_features": True}})
    with pytest.raises(ConfigError, match="probability"):
        ExperimentConfig.from_dict({"train": {"device_augment": 2.0}})
    with pytest.raises(ConfigError, match="pooled_cv"):
        ExperimentConfig.from_dict({"data": {"protocol": "random"}})
