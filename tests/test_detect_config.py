"""Detection experiment files: every shipped one loads and carries the paper's values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulmo.detect.config import load_detect_config
from pulmo.detect.task import epoch_learning_rates
from pulmo.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "xray-detect"


def test_every_detect_experiment_loads_with_paper_values():
    files = sorted(f for f in CONFIGS.glob("*_fig*.yaml"))
    # 17 rows of Figs. 5, 7, 9, 11 on two datasets + second stages of base and ideal + the 30(+24+16+24)-epoch ideal
    # + two of those evaluated with test-time flipping + a fifth stage stopped by patience + the YOLOv5s twins of
    # Fig. 5's four and Figs. 7 / 9's eleven baggage rows
    assert len(files) == 58
    twins = sorted(CONFIGS.glob("baggage_*_yolov5s.yaml"))
    assert len(twins) == 15
    for f in twins:  # the paper's model; everything else as its YOLOv5n row
        s, n = load_detect_config(f), load_detect_config(f.with_name(f.name.replace("_yolov5s", "")))
        assert (s.model.name, n.model.name) == ("yolov5s", "yolov5n"), f
        assert (s.data, s.tiling, s.train, s.inference, s.paper) == (n.data, n.tiling, n.train, n.inference, n.paper), f
    for f in files:
        cfg = load_detect_config(f)
        assert cfg.task == "detect" and cfg.name == f.stem
        assert set(cfg.paper) == {"precision", "recall", "f1"}, f
    ideal = load_detect_config(CONFIGS / "baggage_fig11_ideal.yaml")
    assert ideal.data.remap == "agnostic" and ideal.train.augment == ["hflip", "blur", "brightness_contrast"]
    assert load_detect_config(CONFIGS / "synthetic_fig11_base.yaml").tiling.mode == "full"


@pytest.mark.parametrize("text, match", [
    ("tiling: {tile: 100}\n", "multiple of 32"),
    ("tiling: {mode: sliding}\n", "tiling.mode"),
    ("train: {augment: [mosaic]}\n", "unknown names"),
    ("train: {monitor: test_f1}\n", "train.monitor"),
    ("train: {lr_final: 0}\n", "lr_final"),
    ("inference: {flip_tta: maybe}\n", "flip_tta"),
    ("train: {lr_final: 2}\n", "lr_final"),
    ("train: {patience: -1}\n", "patience"),
    ("trian: {}\n", "unknown key"),
])
def test_bad_detect_configs(tmp_path, text, match):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_detect_config(path)


def test_epoch_learning_rates_cosine_and_constant():
    rates = epoch_learning_rates(1e-3, 0.1, 5)
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert rates[2] == pytest.approx(0.5 * (1e-3 + 1e-4))  # cosine midpoint
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert epoch_learning_rates(1e-3, 1.0, 4) == pytest.approx([1e-3] * 4)
    assert epoch_learning_rates(1e-3, 0.1, 1) == [1e-3]
