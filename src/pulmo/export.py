"""ONNX export and the ONNX runtime, for every bundled model.

    pulmo export --task lung-sounds|cxr|detect [--checkpoint FILE] --out model.onnx [--int8]
    pulmo export --task resp-rate [--checkpoint FILE] --out FOLDER
    pulmo evaluate|analyze|serve ... --runtime torch|onnx|onnx-int8

Batch size dynamic in every export:

- lung sounds: the whole :class:`~pulmo.engine.task.AudioClassifier`, feature extraction (STFT,
  log power, normalisation) included, STFT features as a convolution and log-mel features as two
  ``MatMul`` (frames x windowed DFT, power x mel matrix; :mod:`pulmo.export_stft`): input
  ``(batch, samples)`` float32 at the model's sample rate, output ``(batch, classes)`` logits;
- chest X-ray: the network after preprocessing: input ``(batch, channels, size, size)``, the
  normalised image tensor ``CxrPipeline.logits`` builds, output logits (temperature and the
  "uncertain" threshold stay in the pipeline);
- detector: through ultralytics' own exporter (:mod:`pulmo.detect.export`): input tiles
  ``(batch, 3, H, W)`` in [0, 1], output raw boxes and class probabilities before NMS (NMS,
  thresholds and tiling stay in the pipeline);
- respiratory rate: a folder, one file per network of the vote (:mod:`pulmo.resp_rate.export`):
  input ``(batch, window samples)``, output the network's rate, count and class logits (gating,
  fits, refinement and the vote stay in the pipeline).

All but the detector go through ``torch.onnx.export(dynamo=True)``.

``--int8`` quantises the 2-D convolutions statically (onnxruntime QDQ: int8 weights, uint8
activations); for lung sounds also the ReLUs, and the 2x2 average poolings written as depthwise
convolutions, so that the whole CNN stays in int8 (:func:`quantize_int8`). Activation ranges are
calibrated on real inputs of the training side only: ICBHI
training cycles for lung sounds, ``covid19_3class/train`` images for the chest model, one tile
each of ``xray_det`` training images for the detector, read from the data root; where that data
is absent, synthetic inputs are used and a warning says so. ``--runtime onnx-int8`` is not offered
for the chest X-ray and respiratory-rate models (:data:`INT8_WITHHELD`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pulmo.errors import ConfigError

EXPORTABLE = ("lung-sounds", "resp-rate", "cxr", "detect")
RUNTIMES = ("torch", "onnx", "onnx-int8")
# int8 kept only where it keeps the model's decisions (results/speed.md); FP32 elsewhere
INT8_WITHHELD = {"cxr": "on the bundled model, int8 changes the most likely class of about a third of the validation "
                        "images (results/speed.md); use --runtime onnx",
                 "resp-rate": "its networks are exported in FP32 only (results/speed.md); use --runtime onnx"}
OPSET = 18  # STFT needs opset 17 or later
EXPORT_FORMAT = 2  # in cached file names; 2: the lung-sound STFT as a convolution (pulmo.export_stft)
# per task where it differs; lung sounds 3: log-mel as MatMuls, int8 of the whole CNN (pulmo.export_stft)
EXPORT_FORMATS = {"lung-sounds": 3}
#: tasks exported as a folder of networks (pulmo.resp_rate.export), not one file
FOLDER_EXPORTS = ("resp-rate",)


def _network(task: str, checkpoint: str | Path | None) -> tuple[Any, Any]:
    """``(torch module, example input)`` of ``task``'s model in ``checkpoint`` (bundled when None)."""
    import torch

    if task == "lung-sounds":
        from pulmo.export_stft import ExportedClassifier
        from pulmo.inference.lung_sounds import LungSoundPipeline

        pipe = LungSoundPipeline.from_checkpoint(checkpoint)
        return ExportedClassifier(pipe.net).eval(), torch.zeros(2, pipe.audio.cycle_samples)
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
    out = Path(out)
    if task in FOLDER_EXPORTS:
        if int8:
            raise ConfigError(f"--int8 is not available for {task}: {INT8_WITHHELD[task]}")
        if out.suffix == ".onnx":
            raise ConfigError(f"{out}: the {task} model is several networks, exported as one .onnx file each: "
                              "give --out a folder")
        from pulmo.resp_rate.export import export_rate_model

        return export_rate_model(checkpoint, out, OPSET)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = out if not int8 else out.with_name(out.stem + ".fp32.onnx")
    if task == "detect":
        from pulmo.detect.export import export_detector
        from pulmo.inference.bundled import default_checkpoint

        shape: tuple[int, ...] = export_detector(checkpoint or default_checkpoint(task), fp32)
    else:
        net, example = _network(task, checkpoint)
        torch.onnx.export(net, (example,), str(fp32), dynamo=True, opset_version=OPSET, input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                          external_data=False, verbose=False)
        shape = tuple(example.shape[1:])
    if int8:
        quantize_int8(fp32, out, calibration_inputs(task, checkpoint, shape), whole_cnn=task == "lung-sounds")
        fp32.unlink()
    return out


def quantize_int8(fp32: Path, out: Path, batches: list[np.ndarray], whole_cnn: bool = False) -> None:
    """Static QDQ quantisation of ``fp32``'s 2-D convolutions into ``out``, activation ranges from
    ``batches``. 1-D convolutions (the lung-sound STFT's DFT kernels on raw audio,
    :mod:`pulmo.export_stft`) and MatMuls (the log-mel front end's DFT and mel matrices) stay FP32:
    256 levels of raw audio (about 48 dB) would not carry the 80 dB range of the log power.

    ``whole_cnn`` (lung sounds): the ReLUs are quantised too and each 2x2 ``AveragePool`` becomes a
    depthwise 2x2 convolution by 0.25 (:func:`_pools_as_convolutions`; the same numbers, and 0.25 is
    exact in int8), so that the CNN runs from its second convolution to its head in int8 without
    dequantising in between (onnxruntime's own ``QLinearAveragePool``, which a quantised pooling
    would become, took longer than the convolutions around it); a 2-D convolution of one input
    channel (the first) stays FP32, where it is faster than in int8 (results/speed.md)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32.with_name(fp32.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared), load_external_data=False)
    if whole_cnn:
        _pools_as_convolutions(model)
        onnx.save(model, str(prepared))
    graph = model.graph
    weights = {init.name: tuple(init.dims) for init in graph.initializer}

    def kept_fp32(node: onnx.NodeProto) -> bool:
        shape = weights.get(node.input[1], ())
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        return len(shape) == 3 or (whole_cnn and len(shape) == 4 and shape[1] == 1 and group == 1)

    excluded = [node.name for node in graph.node if node.op_type == "Conv" and kept_fp32(node)]
    feed = iter({graph.input[0].name: b} for b in batches)

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feed, None)

    try:
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv", "Relu"] if whole_cnn else ["Conv"], nodes_to_exclude=excluded,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)


def _pools_as_convolutions(model: Any) -> None:
    """Replace, in place, each ``AveragePool`` of ``model`` whose kernel equals its strides (no
    padding) by a depthwise ``Conv`` with every weight ``1 / kernel area``: the same output, as a
    node int8 quantisation keeps in onnxruntime's convolution code. Channel counts come from the
    shapes ``quant_pre_process`` inferred."""
    from onnx import helper, numpy_helper

    graph = model.graph
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value for v in [*graph.value_info, *graph.input]
                if len(v.type.tensor_type.shape.dim) == 4}
    for index, node in enumerate(list(graph.node)):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        if (node.op_type != "AveragePool" or len(kernel) != 2 or list(attrs.get("strides", [1, 1])) != kernel
                or any(attrs.get("pads", [])) or attrs.get("ceil_mode", 0)
                or attrs.get("auto_pad", b"NOTSET") != b"NOTSET"
                or not channels.get(node.input[0])):
            continue
        c = channels[node.input[0]]
        weight = numpy_helper.from_array(np.full((c, 1, *kernel), 1 / (kernel[0] * kernel[1]), np.float32),
                                         f"{node.name}_as_conv_weight")
        graph.initializer.append(weight)
        graph.node.remove(node)
        graph.node.insert(index, helper.make_node("Conv", [node.input[0], weight.name], list(node.output),
                                                  name=f"{node.name}_as_conv", group=c, kernel_shape=kernel,
                                                  strides=kernel))


def calibration_inputs(task: str, checkpoint: str | Path | None, shape: tuple[int, ...], n: int = 128,
                       batch: int = 16) -> list[np.ndarray]:
    """``n`` model inputs of ``shape`` from the training side of the task's shared data set (the
    first ``n`` in a fixed shuffle), in batches; synthetic ones where the data is absent."""
    import warnings

    from pulmo.config import default_data_root

    rng = np.random.default_rng(0)
    data = default_data_root()
    if task == "lung-sounds" and (data / "icbhi" / "annotations").is_dir():
        from pulmo.data.adapters.icbhi import load_icbhi
        from pulmo.data.audio_io import fix_length
        from pulmo.data.cycles import load_cycle_waveforms
        from pulmo.inference.lung_sounds import LungSoundPipeline

        pipe = LungSoundPipeline.from_checkpoint(checkpoint)
        train = [r for r in load_icbhi(data / "icbhi").records if r.split == "train"]
        chosen = [train[i] for i in rng.permutation(len(train))[:n]]
        waves = [fix_length(w, shape[-1]) for w in load_cycle_waveforms(chosen, pipe.audio, progress=False)]
        inputs = np.stack(waves).astype(np.float32)
    elif task == "cxr" and (data / "cxr" / "covid19_3class" / "train").is_dir():
        import torch

        from pulmo.cxr.preprocess import normalize_tensor, prepare_gray
        from pulmo.data.image_io import read_image
        from pulmo.inference.cxr import CxrPipeline

        cfg = CxrPipeline.from_checkpoint(checkpoint).cfg.image
        files = sorted((data / "cxr" / "covid19_3class" / "train").glob("*/*"))
        chosen = [files[i] for i in rng.permutation(len(files))[:n]]
        grays = torch.from_numpy(np.stack([prepare_gray(read_image(f), cfg) for f in chosen]))[:, None]
        inputs = normalize_tensor(grays, cfg).numpy().astype(np.float32)
    elif task == "detect" and (data / "xray_det").is_dir():
        from pulmo.detect.export import calibration_tiles

        inputs = calibration_tiles(checkpoint, data / "xray_det", n, rng)
    else:
        warnings.warn(f"int8 calibration of {task}: no training data under {data}; calibrating on synthetic inputs",
                      stacklevel=2)
        inputs = (0.1 * rng.standard_normal((n, *shape))).astype(np.float32)
    return [inputs[i:i + batch] for i in range(0, len(inputs), batch)]


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

    def outputs(self, x: Any) -> list[np.ndarray]:
        """Every output of the graph for ``x`` (a tensor or array, run as float32)."""
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        return self.session.run(None, {self.input: x.astype(np.float32, copy=False)})

    def __call__(self, audio: Any) -> Any:
        import torch

        return torch.from_numpy(self.outputs(audio)[0])

    def eval(self) -> OnnxClassifier:  # the torch module's interface, used by predict_probabilities
        return self


def cached_export(checkpoint: str | Path | None, int8: bool = False, task: str = "lung-sounds") -> Path:
    """The ONNX file of ``task``'s model in ``checkpoint`` (bundled when None), exported once into
    ``$PULMO_CACHE`` (default ``~/.cache/pulmo``) under the checkpoint's SHA-256 and the export
    format (the task's in :data:`EXPORT_FORMATS`, else :data:`EXPORT_FORMAT`)."""
    from pulmo.inference.bundled import default_checkpoint

    source = Path(checkpoint) if checkpoint else default_checkpoint(task)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("PULMO_CACHE", Path.home() / ".cache" / "pulmo")) / "onnx"
    name = f"{task}-{digest}-v{EXPORT_FORMATS.get(task, EXPORT_FORMAT)}{'-int8' if int8 else ''}"
    folder = task in FOLDER_EXPORTS  # a folder of networks, else one .onnx file
    path = cache / (name if folder else f"{name}.onnx")
    if not path.exists():  # written under a temporary name and renamed, so that a half export is never used
        partial = cache / (f"{name}.partial" if folder else f"{name}.partial.onnx")
        if partial.is_dir():  # left by an export that crashed
            shutil.rmtree(partial)
        else:
            partial.unlink(missing_ok=True)
        export_model(task, source, partial, int8)
        partial.rename(path)
    return path


def default_runtime() -> str:
    """The runtime of the front door's pipelines (``pulmo analyze``, ``pulmo serve``, their
    ``--runtime``): ``$PULMO_RUNTIME``, ``torch`` when unset."""
    return os.environ.get("PULMO_RUNTIME", "torch")


def check_runtime(task: str, runtime: str) -> None:
    """Raise a one-line :class:`ConfigError` naming ``task`` where it cannot run in ``runtime``."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    if runtime != "torch" and task not in EXPORTABLE:
        raise ConfigError(f"--runtime {runtime} is not available for {task} (no ONNX export in this version; "
                          f"exportable: {', '.join(EXPORTABLE)}); run {task} with --runtime torch")
    if runtime == "onnx-int8" and task in INT8_WITHHELD:
        raise ConfigError(f"--runtime onnx-int8 is not available for {task}: {INT8_WITHHELD[task]}")


def use_runtime(task: str, pipe: Any, checkpoint: str | Path | None, runtime: str) -> Any:
    """``pipe``, ``task``'s inference pipeline of ``checkpoint`` (bundled when None), with its network
    run in ``runtime``: ``torch`` leaves it as it is; ``onnx`` / ``onnx-int8`` put the cached FP32 /
    int8 export (:func:`cached_export`, as :class:`~pulmo.inference.onnx.OnnxModule`) in its place
    (``pipe.net`` of lung sounds, ``pipe.model`` of the chest X-ray, ``pipe.detector.net`` of the
    detector), run with as many threads as PyTorch
    has (``OMP_NUM_THREADS`` where set; onnxruntime's own default is every core), and ``runtime``
    added to ``pipe.model_info`` (what results name as their model). Returns ``pipe``."""
    check_runtime(task, runtime)
    if runtime == "torch":
        return pipe
    import torch

    _need_onnx()
    path = cached_export(checkpoint, int8=runtime == "onnx-int8", task=task)
    from pulmo.inference.onnx import OnnxModule

    threads = torch.get_num_threads()
    if task == "resp-rate":
        from pulmo.resp_rate.export import use_exported_networks

        use_exported_networks(pipe, path, threads)
        pipe.model["runtime"] = runtime
        return pipe
    if task == "detect":
        pipe.detector.net = OnnxModule(path, threads=threads)
    elif task == "cxr":
        pipe.model = OnnxModule(path, pipe.model, threads)  # PyTorch kept for Grad-CAM's gradients
    else:
        pipe.net = OnnxModule(path, threads=threads)
    pipe.model_info["runtime"] = runtime
    return pipe


def _need_onnx() -> None:
    """Raise a one-line ConfigError where the onnx extra is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export and runtime need the onnx extra: pip install 'pulmo[onnx]'") from None


def export(task: str, checkpoint: str | None, out: str, int8: bool = False) -> Path:
    """``pulmo export``: one task's model to ONNX."""
    return export_model(task, checkpoint, out, int8)


__all__ = ["EXPORTABLE", "RUNTIMES", "OnnxClassifier", "cached_export", "check_runtime", "default_runtime", "export",
           "export_model", "use_runtime"]
