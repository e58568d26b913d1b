"""ONNX export and runtime of the respiratory-rate model: one ONNX file per network.

The bundled rate model is not one network: a vote of composites of two networks each, plus the
networks trained for air audio, with NumPy between them (window gating, rate-distribution fits,
refinement on the waveform). One graph of all of them would run every network whenever any one is
asked for (onnxruntime runs the whole graph), so the export is a folder with one file per network,
in the order :func:`rate_networks` walks the predictors, and ``networks.json`` naming them. The
runtime puts an :class:`OnnxRateNet` in each :class:`~pulmo.resp_rate.predictor.NetPredictor`;
everything between the networks stays as it is.

Each network is exported for its own window length (``clip.window_s`` at ``clip.sample_rate_hz``)
with a dynamic batch: ``(batch, samples)`` float32 audio in, the network's outputs out (``rate``,
``count``, ``breath_logits``, ``noise_logits`` and, with a rate-bin head, ``rate_bin_logits``).
A recording shorter than one window is scored as one window of its own length
(:func:`~pulmo.resp_rate.net.predict_windows`); that window goes to the PyTorch network kept
beside the export. The log-mel front end is written as two matrix products
(:class:`~pulmo.export_stft.MatmulMel`), which onnxruntime runs faster than its ``STFT`` kernel.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pulmo.errors import CheckpointError
from pulmo.resp_rate.net import RateNet
from pulmo.resp_rate.predictor import CompositePredictor, NetPredictor, VotePredictor

Predictor = NetPredictor | CompositePredictor | VotePredictor
INDEX = "networks.json"


def rate_networks(predictor: Predictor | None) -> list[NetPredictor]:
    """Every network of ``predictor``, depth first: a composite's rate then breathing member, a
    vote's members in order (none for ``None``)."""
    if predictor is None:
        return []
    if isinstance(predictor, NetPredictor):
        return [predictor]
    if isinstance(predictor, CompositePredictor):
        return [predictor.rate, predictor.breathing]
    return [n for member in predictor.members for n in rate_networks(member)]


def pipeline_networks(pipe: Any) -> list[NetPredictor]:
    """The networks of a :class:`~pulmo.inference.resp_rate.RespRatePipeline`: its predictor's,
    then its air networks' where it has them."""
    return rate_networks(pipe.predictor) + rate_networks(pipe.air_networks)


class RateGraph(nn.Module):
    """``net`` as exported: its outputs as a tuple in ``names`` order, its log-mel front end as
    :class:`~pulmo.export_stft.MatmulMel` (other front ends as they are)."""

    def __init__(self, net: RateNet, names: list[str]) -> None:
        super().__init__()
        from pulmo.export_stft import MatmulMel
        from pulmo.features.spectral import _MelBase

        self.features = MatmulMel(net.features) if isinstance(net.features, _MelBase) else net.features
        self.model, self.names = net.model, names

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(self.features(audio))
        return tuple(out[k] for k in self.names)


def export_network(node: NetPredictor, out: Path, opset: int) -> dict[str, Any]:
    """Write ``node``'s network to ``out``; returns its entry of ``networks.json``."""
    net = node.net.eval()
    samples = node.clip.window_samples
    example = torch.zeros(2, samples)
    with torch.no_grad():
        names = list(net(example))
    with warnings.catch_warnings():  # the exporter's notes on its own internals say nothing to a user
        warnings.simplefilter("ignore")
        torch.onnx.export(RateGraph(net, names).eval(), (example,), str(out), dynamo=True, opset_version=opset,
                          input_names=["audio"], output_names=names, dynamic_shapes=({0: torch.export.Dim("batch")},),
                          external_data=False, verbose=False)
    return {"file": out.name, "samples": samples, "sample_rate_hz": node.clip.sample_rate_hz, "outputs": names}


def export_rate_model(checkpoint: str | Path | None, out: str | Path, opset: int, progress: bool = True) -> Path:
    """Export every network of the resp-rate model in ``checkpoint`` (the bundled one when None)
    into the folder ``out`` (``net-00.onnx``, ... and ``networks.json``); returns ``out``."""
    from tqdm.auto import tqdm

    from pulmo.inference.resp_rate import RespRatePipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nodes = pipeline_networks(RespRatePipeline.from_checkpoint(checkpoint))
    entries = [export_network(node, out / f"net-{i:02d}.onnx", opset)
               for i, node in enumerate(tqdm(nodes, desc="exporting rate networks", unit="network", disable=not progress))]
    (out / INDEX).write_text(json.dumps({"networks": entries}, indent=1))
    return out


class OnnxRateNet(nn.Module):
    """An exported rate network in the place of its :class:`RateNet`: audio ``(B, samples)`` in,
    the same output dict out; a batch of another length (one short recording's own window) goes
    to ``torch_net``. Keeps the attributes window prediction reads (``rate_scale_bpm``,
    ``count_scale``, ``model`` for the rate-bin centres)."""

    def __init__(self, path: Path, entry: dict[str, Any], torch_net: RateNet, threads: int | None = None) -> None:
        super().__init__()
        from pulmo.export import OnnxClassifier

        self.runner = OnnxClassifier(path, threads)
        self.samples, self.names = int(entry["samples"]), list(entry["outputs"])
        self.torch_net = torch_net
        self.model = torch_net.model
        self.rate_scale_bpm, self.count_scale = torch_net.rate_scale_bpm, torch_net.count_scale

    def forward(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        if audio.shape[-1] != self.samples:
            return self.torch_net(audio)
        return {k: torch.from_numpy(v) for k, v in zip(self.names, self.runner.outputs(audio))}


def use_exported_networks(pipe: Any, folder: Path, threads: int | None = None) -> None:
    """Put the networks exported in ``folder`` (:func:`export_rate_model`) in place of ``pipe``'s.

    Raises:
        CheckpointError: the folder holds another model's networks (count or window lengths differ).
    """
    entries = json.loads((folder / INDEX).read_text())["networks"]
    nodes = pipeline_networks(pipe)
    lengths = [n.clip.window_samples for n in nodes]
    if [e["samples"] for e in entries] != lengths:
        raise CheckpointError(f"{folder} holds the networks of another resp-rate model ({len(entries)} networks, "
                              f"this one has {len(nodes)})")
    for node, entry in zip(nodes, entries):
        node.net = OnnxRateNet(folder / entry["file"], entry, node.net, threads)  # type: ignore[assignment]


__all__ = ["OnnxRateNet", "RateGraph", "export_network", "export_rate_model", "pipeline_networks", "rate_networks",
           "use_exported_networks"]
