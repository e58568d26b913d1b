"""ONNX export of the respiratory-rate model: one file per network, the same rates as PyTorch,
short recordings through the PyTorch network kept beside, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pulmo.data.adapters.synthetic_breath import write_breath_folder
from pulmo.engine.checkpoint import read_checkpoint
from pulmo.errors import CheckpointError, ConfigError
from pulmo.resp_rate.config import RespRateConfig
from pulmo.resp_rate.net import build_net, save_rr_checkpoint
from pulmo.resp_rate.predictor import save_composite

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _config(root: Path, name: str, seed: int) -> RespRateConfig:
    return RespRateConfig.from_dict({
        "name": name, "data": {"dataset": "breath_csv", "root": str(root)},
        "clip": {"window_s": 7.0, "hop_s": 3.0},
        "model": {"name": "rr_lstm", "params": {"variant": "lstm", "hidden": 8, "embed": 8}},
        "train": {"seed": seed},
    })


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A composite of two tiny untrained networks, its breathing folder and its export."""
    from pulmo.export import export_model

    tmp = tmp_path_factory.mktemp("rr_export")
    folder = write_breath_folder(tmp / "breaths", subjects=1, seconds=16.0)
    parts = {}
    for seed, role in enumerate(("rate", "breathing")):
        torch.manual_seed(seed)
        cfg = _config(folder, f"{role}_net", seed)
        parts[role] = read_checkpoint(save_rr_checkpoint(tmp / f"{role}.pt", build_net(cfg), cfg, {}))
    checkpoint = save_composite(tmp / "composite.pt", "composite", parts["rate"], parts["breathing"], 25.0, {})
    return checkpoint, folder, export_model("resp-rate", checkpoint, tmp / "onnx")


def test_each_network_is_one_file_named_in_the_index(exported):
    _, _, out = exported
    index = json.loads((out / "networks.json").read_text())["networks"]
    assert [e["file"] for e in index] == ["net-00.onnx", "net-01.onnx"]
    assert all(e["samples"] == 14000 and (out / e["file"]).is_file() for e in index)  # 7 s at 2 kHz
    assert index[0]["outputs"][:4] == ["rate", "count", "breath_logits", "noise_logits"]


def test_onnx_runtime_gives_pytorchs_rates_and_keeps_short_recordings_on_pytorch(exported):
    from pulmo.export import use_runtime
    from pulmo.inference.resp_rate import RespRatePipeline
    from pulmo.resp_rate.export import OnnxRateNet, pipeline_networks

    checkpoint, folder, out = exported
    ref = RespRatePipeline.from_checkpoint(checkpoint)
    onnx = RespRatePipeline.from_checkpoint(checkpoint)
    from pulmo.resp_rate.export import use_exported_networks

    use_exported_networks(onnx, out)
    assert all(isinstance(n.net, OnnxRateNet) for n in pipeline_networks(onnx))
    audio = next((folder / "audio").rglob("*.flac"))
    a, b = ref.estimate(audio), onnx.estimate(audio)
    assert b.rate_bpm == pytest.approx(a.rate_bpm, abs=1e-3)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 14000)).astype(np.float32)) * 0.1
    for node, exported_node in zip(pipeline_networks(ref), pipeline_networks(onnx)):
        want, got = node.net(x), exported_node.net(x)
        assert set(got) == set(want)
        for key in want:
            torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=1e-4)
        short = x[:, :9000]  # one short recording's own window: the PyTorch network answers
        torch.testing.assert_close(exported_node.net(short)["rate"], node.net(short)["rate"])
    pipe = use_runtime("resp-rate", RespRatePipeline.from_checkpoint(checkpoint), checkpoint, "onnx")
    assert pipe.model["runtime"] == "onnx" and pipe.estimate(audio).rate_bpm == pytest.approx(a.rate_bpm, abs=1e-3)


def test_export_refusals(exported, tmp_path):
    from pulmo.export import check_runtime, export_model
    from pulmo.inference.resp_rate import RespRatePipeline
    from pulmo.resp_rate.export import use_exported_networks

    checkpoint, _, out = exported
    with pytest.raises(ConfigError, match="give --out a folder"):
        export_model("resp-rate", checkpoint, tmp_path / "rate.onnx")
    with pytest.raises(ConfigError, match="--int8 is not available for resp-rate"):
        export_model("resp-rate", checkpoint, tmp_path / "rate", int8=True)
    with pytest.raises(ConfigError, match="onnx-int8 is not available for resp-rate"):
        check_runtime("resp-rate", "onnx-int8")
    with pytest.raises(CheckpointError, match="another resp-rate model"):
        use_exported_networks(RespRatePipeline.from_checkpoint(), out)  # the bundled model has more networks
