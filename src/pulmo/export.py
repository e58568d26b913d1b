"""ONNX export and the ONNX runtime, for the lung-sound model (waveforms in, logits out).

    pulmo export --task lung-sounds [--checkpoint FILE] --out model.onnx [--int8]
    pulmo evaluate --task lung-sounds --runtime onnx ...

The whole :class:`~pulmo.engine.task.AudioClassifier` is exported, feature extraction (STFT,
log power, normalisation) included, by ``torch.onnx.export(dynamo=True)``: input ``audio``
``(batch, samples)`` float32 at the model's sample rate, output ``logits`` ``(batch, classes)``.
``--int8`` adds onnxruntime's dynamic quantisation (int8 weights). Other tasks are not exported
by this version and say so.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from pulmo.errors import ConfigError

EXPORTABLE = ("lung-sounds",)
OPSET = 18  # STFT needs opset 17 or later


def export_lung_sounds(checkpoint: str | Path | None, out: str | Path, int8: bool = False) -> Path:
    """Write the lung-sound model of ``checkpoint`` (the bundled one when None) to ``out``.

    Returns ``out``. Raises :class:`ConfigError` when onnx / onnxruntime are not installed.
    """
    import torch

    from pulmo.inference.lung_sounds import LungSoundPipeline

    _need_onnx()
    pipe = LungSoundPipeline.from_checkpoint(checkpoint)
    net = pipe.net.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, pipe.audio.cycle_samples)
    fp32 = out if not int8 else out.with_name(out.stem + ".fp32.onnx")
    torch.onnx.export(net, (example,), str(fp32), dynamo=True, opset_version=OPSET, input_names=["audio"],
                      output_names=["logits"], dynamic_shapes={"audio": {0: torch.export.Dim("batch")}},
                      external_data=False, verbose=False)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
        fp32.unlink()
    return out


class OnnxClassifier:
    """An exported classifier as a drop-in for the torch one in
    :func:`pulmo.engine.evaluate.predict_probabilities`: ``(B, T)`` tensor in, logits tensor out."""

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


def cached_export(checkpoint: str | Path | None, int8: bool = False) -> Path:
    """The ONNX file for ``checkpoint``, exported once into ``$PULMO_CACHE`` (default
    ``~/.cache/pulmo``) under the checkpoint's SHA-256."""
    from pulmo.inference.bundled import default_checkpoint

    source = Path(checkpoint) if checkpoint else default_checkpoint("lung-sounds")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("PULMO_CACHE", Path.home() / ".cache" / "pulmo")) / "onnx"
    path = cache / f"lung-sounds-{digest}{'-int8' if int8 else ''}.onnx"
    if not path.is_file():
        export_lung_sounds(source, path, int8)
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
    if task not in EXPORTABLE:
        raise ConfigError(f"ONNX export of {task!r} is not in this version of pulmo; exportable: {', '.join(EXPORTABLE)}")
    return export_lung_sounds(checkpoint, out, int8)


__all__ = ["EXPORTABLE", "OnnxClassifier", "cached_export", "export", "export_lung_sounds"]
