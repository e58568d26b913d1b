"""ONNX export and the ONNX runtime, for the lung-sound and the chest X-ray models.

    pulmo export --task lung-sounds|cxr [--checkpoint FILE] --out model.onnx [--int8]
    pulmo evaluate --task lung-sounds|cxr --runtime onnx ...

Exported by ``torch.onnx.export(dynamo=True)``, batch size dynamic:

- lung sounds: the whole :class:`~pulmo.engine.task.AudioClassifier`, feature extraction (STFT,
  log power, normalisation) included: input ``(batch, samples)`` float32 at the model's sample
  rate, output ``(batch, classes)`` logits;
- chest X-ray: the network after preprocessing: input ``(batch, channels, size, size)``, the
  normalised image tensor ``CxrPipeline.logits`` builds, output logits (temperature and the
  "uncertain" threshold stay in the pipeline).

``--int8`` adds onnxruntime's dynamic quantisation (int8 weights). The detector is not exported
by this version and says so.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from pulmo.errors import ConfigError

EXPORTABLE = ("lung-sounds", "cxr")
OPSET = 18  # STFT needs opset 17 or later


def _network(task: str, checkpoint: str | Path | None) -> tuple[Any, Any]:
    """``(torch module, example input)`` of ``task``'s model in ``checkpoint`` (bundled when None)."""
    import torch

    if task == "lung-sounds":
        from pulmo.inference.lung_sounds import LungSoundPipeline

        pipe = LungSoundPipeline.from_checkpoint(checkpoint)
        return pipe.net.eval(), torch.zeros(2, pipe.audio.cycle_samples)
    from pulmo.cxr.preprocess import normalize_tensor
    from pulmo.inference.cxr import CxrPipeline

    cxr = CxrPipeline.from_checkpoint(checkpoint)
    size = cxr.cfg.image.size_px
    return cxr.model.eval(), normalize_tensor(torch.zeros(2, 1, size, size), cxr.cfg.image)


def export_model(task: str, checkpoint: str | Path | None, out: str | Path, int8: bool = False) -> Path:
    """Write ``task``'s model of ``checkpoint`` (the bundled one when None) to ``out``; returns it.

    Raises :class:`ConfigError` for a task without an exporter or without onnx installed.
    """
    import torch

    if task not in EXPORTABLE:
        raise ConfigError(f"ONNX export of {task!r} is not in this version of pulmo; exportable: {', '.join(EXPORTABLE)}")
    _need_onnx()
    net, example = _network(task, checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = out if not int8 else out.with_name(out.stem + ".fp32.onnx")
    torch.onnx.export(net, (example,), str(fp32), dynamo=True, opset_version=OPSET, input_names=["input"],
                      output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                      external_data=False, verbose=False)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
        fp32.unlink()
    return out


class OnnxClassifier:
    """An exported classifier as a drop-in for the torch module it came from (``pipe.net`` of
    lung sounds, ``pipe.model`` of the chest X-ray pipeline): a tensor in, a logits tensor out."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, audio: Any) -> Any:
        import torch

        x = audio.detach().cpu().numpy() if hasattr(audio, "detach") else np.asarray(audio)
        return torch.from_numpy(self.session.run(None, {self.input: x.astype(np.float32, copy=False)})[0])

    def eval(self) -> OnnxClassifier:  # the torch module's interface, used by predict_probabilities
        return self


def cached_export(checkpoint: str | Path | None, int8: bool = False, task: str = "lung-sounds") -> Path:
    """The ONNX file of ``task``'s model in ``checkpoint`` (bundled when None), exported once into
    ``$PULMO_CACHE`` (default ``~/.cache/pulmo``) under the checkpoint's SHA-256."""
    from pulmo.inference.bundled import default_checkpoint

    source = Path(checkpoint) if checkpoint else default_checkpoint(task)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("PULMO_CACHE", Path.home() / ".cache" / "pulmo")) / "onnx"
    path = cache / f"{task}-{digest}{'-int8' if int8 else ''}.onnx"
    if not path.is_file():
        export_model(task, source, path, int8)
    return path


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export and runtime need the onnx extra: pip install 'pulmo[onnx]'") from None


def export(task: str, checkpoint: str | None, out: str, int8: bool = False) -> Path:
    """``pulmo export``: one task's model to ONNX."""
    return export_model(task, checkpoint, out, int8)


__all__ = ["EXPORTABLE", "OnnxClassifier", "cached_export", "export", "export_model"]
