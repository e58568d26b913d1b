import json

import numpy as np
import pytest
import torch
from PIL import Image

from pulmo.cli import main
from pulmo.cxr.checkpoint import build_cxr_model, save_cxr_checkpoint
from pulmo.cxr.config import CxrConfig
from pulmo.cxr.data import prepare_set
from pulmo.cxr.synthetic import write_xray_folder
from pulmo.cxr.train import train_cxr
from pulmo.data.adapters.image_folder import read_image_folder
from pulmo.engine.checkpoint import read_checkpoint
from pulmo.errors import CheckpointError
from pulmo.inference.cxr import CxrPipeline

TINY = {"name": "tiny_vbreathnet", "image": {"size_px": 48},
        "model": {"name": "vbreathnet", "params": {"filters": [8, 8, 8, 8], "dense": 16}},
        "train": {"epochs": 2, "batch_size": 8}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_xray_folder(tmp_path_factory.mktemp("d") / "cxr", per_class=4, size_px=96, splits=("train", "test"), seed=3)
    cfg = CxrConfig.from_dict(TINY)
    train = prepare_set(read_image_folder(root, split="train"), cfg.classes, cfg.image)
    test = prepare_set(read_image_folder(root, split="test"), cfg.classes, cfg.image)
    res = train_cxr(cfg, train, test)
    assert res.best_epoch in (1, 2) and len(res.history) == 2
    ckpt = save_cxr_checkpoint(tmp_path_factory.mktemp("m") / "model.pt", res.model, cfg, {"val": {"accuracy": 0.5}}, half=True)
    return root, ckpt


def test_evaluate_json_with_and_without_a_split_level(tiny, capsys, tmp_path):
    root, ckpt = tiny
    assert main(["evaluate", "--task", "cxr", "--data", str(root), "--split", "test", "--checkpoint", str(ckpt), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "macro_f1", "f1", "n", "model", "checkpoint", "checkpoint_sha256"):
        assert key in rep
    assert set(rep["f1"]) == {"Covid", "Normal", "Viral Pneumonia"} and 0 <= rep["macro_f1"] <= 1
    # test images hashing within 4 bits of a train image are dropped and named
    assert rep["split"] == "test" and rep["n"] + len(rep["leaks_dropped"]) == 12 and rep["n"] >= 9
    assert all(i.startswith("test/") for i in rep["leaks_dropped"])
    flat = root / "test"  # class folders directly under DIR
    assert main(["evaluate", "--task", "cxr", "--data", str(flat), "--checkpoint", str(ckpt), "--json"]) == 0
    out = capsys.readouterr()
    flat_rep = json.loads(out.out)
    assert flat_rep["n"] == 12 and flat_rep["leaks_dropped"] == []  # no train split to leak from
    # a folder with a class the model does not know is refused with one line
    (tmp_path / "Tuberculosis").mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "Tuberculosis" / "a.png")
    assert main(["evaluate", "--task", "cxr", "--data", str(tmp_path), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pulmo: error:") and "Tuberculosis" in err and err.count("\n") == 1


def test_analyze_prints_probabilities_and_gates_and_writes_overlay(tiny, capsys, tmp_path):
    root, ckpt = tiny
    img = root / "test" / "Covid" / "000.png"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNGjunk")
    out = tmp_path / "out"
    assert main(["analyze", str(img), str(bad), "--task", "cxr", "--checkpoint", str(ckpt), "--out", str(out)]) == 1
    cap = capsys.readouterr()
    assert "passes the quality gates" in cap.out and "Covid" in cap.out and "skipped" in cap.err
    res = json.loads((out / "000.json").read_text())
    assert res["task"] == "cxr" and sum(res["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert res["gates"]["passed"] is True and (out / "000.html").is_file()
    overlay = np.asarray(Image.open(out / "000_gradcam.png"))
    assert overlay.shape == (48, 48, 3)


def test_checkpoint_round_trip_and_head_only_lite0(tiny, tmp_path):
    _, ckpt = tiny
    pipe = CxrPipeline.from_checkpoint(ckpt)
    assert pipe.labels == ["Covid", "Normal", "Viral Pneumonia"] and pipe.cfg.image.size_px == 48
    cfg = CxrConfig.from_dict({"image": {"channels": 3, "normalize": "imagenet", "size_px": 64},
                               "model": {"name": "transfer", "params": {"backbone": "efficientnet_lite0", "pretrained": "package"}}})
    from pulmo.cxr.train import build_model

    model = build_model(cfg).eval()
    path = save_cxr_checkpoint(tmp_path / "lite.pt", model, cfg, {})
    bundle = read_checkpoint(path)
    assert not any(k.startswith("backbone.") for k in bundle["state_dict"])
    assert path.stat().st_size < 7e6  # the head only
    rebuilt, _ = build_cxr_model(bundle)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(rebuilt(x), model(x))
    bundle["model"]["backbone_source"]["sha256"] = "0" * 12
    with pytest.raises(CheckpointError, match="differ from the ones this model was trained on"):
        build_cxr_model(bundle)
    bundle["task"] = "lung-sounds"
    with pytest.raises(CheckpointError, match="not cxr"):
        build_cxr_model(bundle)
