"""One Python API for every capability: ``pulmo.load(name).predict(path_or_array)``.

>>> import pulmo
>>> [m.name for m in pulmo.list_models()]                      # bundled models, defaults marked
>>> model = pulmo.load("resp-rate")                             # a name, a task, or a checkpoint file
>>> pred = model.predict("breath.wav")                          # or an array with sample_rate=...
>>> pred.rate_bpm, pred.warnings, pred.to_dict()

Every task has the same verbs: ``predict(x, sample_rate=None)`` for one file or array and
``predict_batch(xs, sample_rate=None)`` for several. Before any label, the input goes through the
front door's checks (:mod:`pulmo.frontdoor.routing`): silence, tones, blank images, a baggage
scan given to the chest X-ray model... are refused with
:class:`~pulmo.frontdoor.inputs.InputRejected`, one line naming the input. A :class:`Prediction`
carries the task's own typed result (``RecordingResult``, ``RateTrack``, ``XrayResult``,
``DetectResult``), whose fields it also exposes (``pred.cycles``, ``pred.rate_bpm``, ``pred.label``,
``pred.detections``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pulmo.catalog import BUNDLED, checkpoint_metadata, resolve
from pulmo.errors import ConfigError, DataError

TASKS = ("lung-sounds", "resp-rate", "cxr", "detect")


@dataclass
class Prediction:
    """One input's result: ``task``, ``source`` (the file name, or ``<array>``), ``warnings``
    (sentences from the input checks), ``result`` (the task's typed result). Attribute access
    falls through to ``result``."""

    task: str
    source: str
    result: Any
    warnings: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        if name == "result":  # not yet set (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.result, name)

    @property
    def summary(self) -> str:
        """One line a person reads first."""
        r = self.result
        if self.task == "lung-sounds":
            counts = {lab: sum(c.label == lab for c in r.cycles) for lab in dict.fromkeys(c.label for c in r.cycles)}
            return f"{len(r.cycles)} cycles: " + ", ".join(f"{n} {lab}" for lab, n in counts.items())
        if self.task == "resp-rate":
            return f"{r.rate_bpm:.1f} breaths/min" + (" (uncertain)" if r.rate_uncertain else "")
        if self.task == "cxr":  # "uncertain" is a label with no probability of its own
            return f"{r.label} ({r.confidence:.0%}" + (f", most likely {r.predicted})" if r.label == "uncertain" else ")")
        return f"{len(r.detections)} object(s) found"

    def to_dict(self) -> dict[str, Any]:
        from pulmo.frontdoor.capabilities import rounded

        out = {"task": self.task, "source": self.source, "summary": self.summary, "warnings": list(self.warnings),
               **self.result.to_dict()}
        out.pop("path", None)
        return rounded(out)

    def __repr__(self) -> str:
        return f"Prediction({self.task}, {self.source}: {self.summary})"


class Model:
    """A loaded model of one task. Build it with :func:`load`."""

    def __init__(self, name: str, task: str, checkpoint: Path, pipeline: Any) -> None:
        self.name, self.task, self.checkpoint, self.pipeline = name, task, checkpoint, pipeline

    def __repr__(self) -> str:
        return f"Model({self.name!r}, task={self.task!r}, checkpoint={self.checkpoint.name!r})"

    def predict(self, x: str | Path | np.ndarray | Any, sample_rate: int | None = None) -> Prediction:
        """Predict one input: a file path, or an array (audio ``(T,)`` or ``(T, channels)`` with
        ``sample_rate`` in Hz; an image ``(H, W)`` or ``(H, W, 3)``: uint8, uint16, or float in [0, 1]).

        Raises:
            InputRejected: the input is out of scope or unusable (one line, naming it).
            PulmoError: the model could not analyse it.
        """
        from pulmo.frontdoor.inputs import Limits, inspect_file
        from pulmo.frontdoor.routing import route_file

        with _as_file(x, self.task, sample_rate) as (path, source):
            route = route_file(path, inspect_file(path, Limits(), name=source), self.task)
            return Prediction(self.task, source, self._run(path), list(route.warnings))

    def predict_batch(self, xs: Iterable[str | Path | np.ndarray | Any], sample_rate: int | None = None,
                      progress: bool = True) -> list[Prediction]:
        """:meth:`predict` for each input, in order, with a progress bar on stderr."""
        from tqdm.auto import tqdm

        items = list(xs)
        return [self.predict(x, sample_rate) for x in tqdm(items, desc=self.name, unit="input",
                                                             disable=not progress or len(items) < 2)]

    def _run(self, path: Path) -> Any:
        if self.task == "detect":
            return self.pipeline.detect_file(path)[0]
        return self.pipeline.analyze_file(path)


def load(model: str | Path = "lung-sounds", device: str = "cpu", runtime: str = "torch") -> Model:
    """Load a bundled model by name (``pulmo.list_models()``), a task's default model by the
    task's name, or a checkpoint file.

    ``device``: where the model runs; this version runs every pipeline on the CPU and refuses
    another device rather than ignoring it. ``runtime``: ``torch``, or ``onnx`` / ``onnx-int8``
    to run the network exported to ONNX in onnxruntime (the export is made once and cached, as
    for ``pulmo analyze --runtime``; needs the ``onnx`` extra).

    Raises:
        CheckpointError: unknown name or unreadable file. ConfigError: an unsupported device, or a
        runtime not offered for the task (int8 of the chest X-ray and rate models).
    """
    if str(device) != "cpu":
        raise ConfigError(f"device {device!r}: this version of pulmo runs its inference pipelines on the CPU only")
    name, path = resolve(model)
    task = BUNDLED[name][1] if name in BUNDLED else str(checkpoint_metadata(path)["task"])
    if task not in TASKS:
        raise ConfigError(f"{path.name}: task {task!r} has no pipeline; tasks: {', '.join(TASKS)}")
    from pulmo.export import check_runtime, use_runtime

    check_runtime(task, runtime)
    return Model(name, task, path, use_runtime(task, _pipeline(task, path), path, runtime))


def _pipeline(task: str, path: Path) -> Any:
    if task == "lung-sounds":
        from pulmo.inference.lung_sounds import LungSoundPipeline

        return LungSoundPipeline.from_checkpoint(path)
    if task == "resp-rate":
        from pulmo.inference.resp_rate import RespRatePipeline

        return RespRatePipeline.from_checkpoint(path)
    if task == "cxr":
        from pulmo.inference.cxr import CxrPipeline

        return CxrPipeline.from_checkpoint(path)
    from pulmo.inference.detect import DetectPipeline

    return DetectPipeline.from_checkpoint(path)


class _as_file:
    """Context manager: ``(path, source name)`` for a path, or for an array written to a
    temporary file (float WAV for audio, PNG for images) that is removed afterwards."""

    def __init__(self, x: Any, task: str, sample_rate: int | None) -> None:
        self.x, self.task, self.sample_rate = x, task, sample_rate
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> tuple[Path, str]:
        if isinstance(self.x, (str, Path)):
            path = Path(self.x)
            return path, path.name
        arr = np.asarray(self.x.detach().cpu().numpy() if hasattr(self.x, "detach") else self.x)
        self._tmp = tempfile.TemporaryDirectory(prefix="pulmo-")
        folder = Path(self._tmp.name)
        if self.task in ("lung-sounds", "resp-rate"):
            return _write_audio(folder / "input.wav", arr, self.sample_rate), "<array>"
        return _write_image(folder / "input.png", arr), "<array>"

    def __exit__(self, *exc: Any) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _write_audio(path: Path, arr: np.ndarray, sample_rate: int | None) -> Path:
    import soundfile as sf

    if sample_rate is None:
        raise ConfigError("an audio array needs sample_rate= (Hz)")
    if arr.ndim not in (1, 2) or arr.size == 0:
        raise DataError(f"<array>: audio must be (samples,) or (samples, channels), got shape {arr.shape}")
    sf.write(path, arr.astype(np.float32), int(sample_rate), subtype="FLOAT")
    return path


def _write_image(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(f"<array>: an image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise DataError("<array>: a float image must hold finite values in [0, 1]")
        arr = (arr * 65535).round().astype(np.uint16) if arr.ndim == 2 else (arr * 255).round().astype(np.uint8)
    elif arr.dtype not in (np.uint8, np.uint16):
        raise DataError(f"<array>: image dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")
    Image.fromarray(arr).save(path)
    return path


__all__ = ["Model", "Prediction", "load"]
