from pathlib import Path

import pytest

from pulmo.config import ExperimentConfig, load_config, save_config
from pulmo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_base_merge_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {max_epochs: 5, lr: 0.01}\nmodel: {name: resnet18_attn, params: {attn: none}}\n")
    (tmp_path / "row.yaml").write_text("base: base.yaml\nmodel: {params: {attn: se}}\n")
    cfg = load_config(tmp_path / "row.yaml", {"train": {"seed": 3}})
    assert cfg.name == "row"
    assert cfg.model.name == "resnet18_attn" and cfg.model.params == {"attn": "se"}
    assert cfg.train.max_epochs == 5 and cfg.train.lr == 0.01 and cfg.train.seed == 3


def test_a_section_naming_another_model_does_not_inherit_its_arguments(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {name: conv_vit, params: {vit: deit_tiny_patch16_224, conv: true}}\n")
    (tmp_path / "row.yaml").write_text("base: base.yaml\nmodel: {name: efficientnet_lite0, params: {pretrained: ''}}\n")
    assert load_config(tmp_path / "row.yaml").model.params == {"pretrained": ""}
    (tmp_path / "same.yaml").write_text("base: base.yaml\nmodel: {name: conv_vit, params: {conv: false}}\n")
    assert load_config(tmp_path / "same.yaml").model.params == {"vit": "deit_tiny_patch16_224", "conv": False}


def test_round_trip(tmp_path):
    cfg = load_config(REPO / "configs/experiments/attentive-resnet/table2_se_spatial.yaml")
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()


def test_every_shipped_experiment_loads():
    files = sorted(f for f in (REPO / "configs/experiments").rglob("*.yaml")
                   if f.name != "base.yaml" and f.parent.name not in ("resp-rate", "xray-detect", "vbreathnet"))
                   # own loaders: test_resp_rate_core.py, test_detect_config.py, test_cxr_data.py
    assert len(files) >= 10
    for f in files:
        cfg = load_config(f)
        if f.name.startswith("table"):
            assert cfg.paper, f"{f} must carry the paper's expected values"


@pytest.mark.parametrize(
    "text, match",
    [
        ("trian: {seed: 1}\n", "unknown key"),
        ("train: {sede: 1}\n", r"unknown key\(s\) \['sede'\] in train\."),
        ("data: {classes: [normal, crackles]}\n", "unknown class names \\['crackles'\\]"),
        ("data: {val_fraction: 1.5}\n", "val_fraction"),
        ("audio: {band_low_hz: 3000, band_high_hz: 2000}\n", "band_low_hz"),
        ("- just a list\n", "mapping"),
        ("train: {optimizer: sgd}\n", "train.optimizer"),
        ("train: {schedule: step}\n", "train.schedule"),
        ("audio: {pad: mirror}\n", "audio.pad"),
        ("train: {sampler: random}\n", "train.sampler"),
    ],
)
def test_bad_configs_raise_clear_errors(tmp_path, text, match):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "bad.yaml")


def test_missing_file_and_nested_base(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="one level"):
        load_config(tmp_path / "a.yaml")


def test_defaults_are_the_paper_preprocessing():
    cfg = ExperimentConfig()
    assert cfg.audio.sample_rate_hz == 4000 and cfg.audio.cycle_samples == 10000
    assert (cfg.audio.band_low_hz, cfg.audio.band_high_hz, cfg.audio.filter_order) == (100, 2000, 5)
