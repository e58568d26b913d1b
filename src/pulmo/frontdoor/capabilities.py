"""The capability interface: what one analysis of one file needs, for every task.

A capability (lung sounds, respiratory rate, chest X-ray, detection) joins the front door
with one small adapter module that registers an object with this face::

    class MyCapability:
        name = "cxr"                      # the --task name
        kinds = frozenset({"image"})      # file kinds it accepts: "audio" and/or "image"
        accepts_16bit_images = False      # 16-bit greyscale scans (detect: True)
        options = ("lung_mask",)          # names of per-call options it takes (may be empty)
        min_sample_rate_hz = 4000         # audio only, optional: slower recordings are refused (422)
        def analyze(self, path, checkpoint=None, options=None) -> Analysis: ...

    CAPABILITIES.add("cxr", MyCapability())    # in pulmo/frontdoor/<task>.py

and one name in :func:`_import_all` below. ``analyze`` gets a file that has already passed
:func:`pulmo.frontdoor.inputs.inspect_file` (known kind, within the size limits); it
returns an :class:`Analysis` whose ``result`` is JSON-serialisable and holds ``model``
(``name``, ``checkpoint`` file name, ``sha256``: the checkpoint file's full SHA-256,
``pulmo_version`` it was trained with; optionally ``evaluation``, one sentence on how good
the model measured, which the report shows). Everything around it (envelope, report, storage, audit) is shared.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pulmo
from pulmo.errors import ConfigError
from pulmo.frontdoor.inputs import InputInfo, InputRejected, Limits, inspect_file
from pulmo.registry import Registry


@dataclass(frozen=True)
class Figure:
    """One PNG figure of a result. ``name`` is file-name safe (``[a-z0-9_-]+``)."""

    name: str
    png: bytes
    caption: str


@dataclass(frozen=True)
class Table:
    """A small table for the summary (text on the command line, HTML in the report)."""

    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Analysis:
    """What a capability returns for one file.

    ``headline``: one sentence a person reads first. ``result``: the capability's own
    JSON-serialisable result, with a ``model`` dict (name, checkpoint, sha256, pulmo_version).
    """

    task: str
    headline: str
    result: dict[str, Any]
    table: Table | None = None
    figures: list[Figure] = field(default_factory=list)


class Capability(Protocol):
    name: str
    kinds: frozenset[str]
    accepts_16bit_images: bool
    options: tuple[str, ...]

    def analyze(self, path: Path, checkpoint: str | None = None, options: Mapping[str, Any] | None = None) -> Analysis:
        ...


CAPABILITIES: Registry[Capability] = Registry("capability")
# Without --task: audio is lung sounds unless told otherwise; an 8-bit image is a chest
# X-ray, a 16-bit one goes to the first capability that takes 16-bit images (detection).
PREFERRED = {"audio": ["lung-sounds", "resp-rate"], "image": ["cxr", "detect"]}
MODEL_KEYS = ("name", "checkpoint", "sha256", "pulmo_version")
ENVELOPE_KEYS = ("task", "pulmo_version", "input", "headline", "table", "figures")


def _import_all() -> None:
    from pulmo.frontdoor import cxr, detect, lung_sounds, resp_rate  # noqa: F401  (registers their capabilities)


def capability(name: str) -> Capability:
    _import_all()
    return CAPABILITIES.get(name)


def capability_names() -> list[str]:
    _import_all()
    return CAPABILITIES.names()


def _deep(info: InputInfo) -> bool:
    return info.kind == "image" and info.details.get("bits_per_sample", 8) > 8


def _suits(cap: Capability, info: InputInfo) -> bool:
    """Whether ``cap`` takes this file as it is: image bit depth, audio sample rate."""
    if _deep(info) and not cap.accepts_16bit_images:
        return False
    rate = info.details.get("sample_rate_hz")
    return info.kind != "audio" or rate is None or rate >= getattr(cap, "min_sample_rate_hz", 0)


def pick_task(info: InputInfo, task: str | None = None) -> Capability:
    """The capability for a checked input: ``task`` if given (it must accept the file's
    kind), else the first of ``PREFERRED[kind]`` that is registered and accepts the file
    (a 16-bit image skips capabilities that take 8-bit only; audio sampled below a
    capability's ``min_sample_rate_hz`` skips it, so 2 kHz breath recordings go to
    respiratory rate), else any that does, by name.

    Raises:
        InputRejected: no capability takes this kind of file, or ``task`` does not.
    """
    _import_all()
    if task is not None:
        try:
            cap = CAPABILITIES.get(task)
        except ConfigError as err:
            raise InputRejected(422, "unknown_task", str(err)) from None
        if info.kind not in cap.kinds:
            raise InputRejected(415, "wrong_kind", f"{info.name}: task {task!r} takes {'/'.join(sorted(cap.kinds))} "
                                f"files, this is {info.kind} ({info.format})")
    else:
        rank = {n: i for i, n in enumerate(PREFERRED.get(info.kind, []))}
        names = sorted(CAPABILITIES.names(), key=lambda n: (rank.get(n, len(rank)), n))
        fits = [CAPABILITIES.get(n) for n in names if info.kind in CAPABILITIES.get(n).kinds]
        if not fits:
            known = ", ".join(f"{n} ({'/'.join(sorted(CAPABILITIES.get(n).kinds))})" for n in CAPABILITIES.names())
            raise InputRejected(415, "no_capability", f"{info.name}: no capability in this version of pulmo takes "
                                f"{info.kind} files; available: {known}")
        cap = next((c for c in fits if _suits(c, info)), fits[0])
    need_hz = getattr(cap, "min_sample_rate_hz", 0)
    if info.kind == "audio" and info.details.get("sample_rate_hz", need_hz) < need_hz:
        raise InputRejected(422, "sample_rate", f"{info.name}: sample rate {info.details['sample_rate_hz']} Hz is below "
                            f"the {need_hz} Hz the {cap.name} model needs")
    if _deep(info) and not cap.accepts_16bit_images:
        raise InputRejected(415, "bit_depth", f"{info.name}: {info.details['mode']} image with "
                            f"{info.details['bits_per_sample']} bits per sample; the {cap.name} model takes 8-bit images "
                            "(convert to 8-bit greyscale first)")
    return cap


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class PipelineCache:
    """A task's inference pipelines, loaded once per checkpoint (``None``: the bundled one) with
    the checkpoint file's full SHA-256; shared by threads (inference only reads the weights).

    ``load(checkpoint)`` builds a pipeline; it is called at most once per checkpoint path.
    """

    def __init__(self, task: str, load: Callable[[str | None], Any]) -> None:
        self.task = task
        self._load = load
        self._pipelines: dict[str, tuple[Any, str]] = {}
        self._lock = threading.Lock()

    def get(self, checkpoint: str | None = None) -> tuple[Any, str]:
        """``(pipeline, checkpoint_sha256)`` for ``checkpoint``."""
        from pulmo.inference.bundled import default_checkpoint

        key = str(Path(checkpoint).resolve()) if checkpoint else ""
        with self._lock:
            if key not in self._pipelines:
                pipe = self._load(checkpoint)
                path = Path(checkpoint) if checkpoint else default_checkpoint(self.task)
                self._pipelines[key] = (pipe, sha256_file(path))
            return self._pipelines[key]


def check_options(task: str, allowed: tuple[str, ...], options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as a dict; ``ConfigError`` naming any option ``task`` does not take."""
    options = dict(options or {})
    unknown = set(options) - set(allowed)
    if unknown:
        raise ConfigError(f"{task} takes options {list(allowed)}, not {sorted(unknown)}")
    return options


def envelope(analysis: Analysis, info: InputInfo, file_sha256: str) -> dict[str, Any]:
    """The JSON written for one analysis: the capability's result plus what made it and of what.

    Keys: ``task``, ``pulmo_version`` (the running pulmo), ``input`` (name, sha256, bytes,
    kind, format and header facts), ``headline``, ``table``, ``figures`` (name, caption),
    then the capability's own keys, with ``model`` among them.
    """
    model = analysis.result.get("model", {})
    missing = [k for k in MODEL_KEYS if not model.get(k)]
    if missing:
        raise ValueError(f"capability {analysis.task!r} returned a result without model {missing}")
    if len(model["sha256"]) != 64:
        raise ValueError(f"capability {analysis.task!r}: model.sha256 must be the checkpoint's full SHA-256 (64 hex)")
    clash = [k for k in ENVELOPE_KEYS if k in analysis.result]
    if clash:
        raise ValueError(f"capability {analysis.task!r} result uses reserved keys {clash}")
    return {
        "task": analysis.task,
        "pulmo_version": pulmo.__version__,
        "input": {"name": info.name, "sha256": file_sha256, "bytes": info.bytes, "kind": info.kind,
                  "format": info.format, **info.details},
        "headline": analysis.headline,
        "table": None if analysis.table is None else {"columns": analysis.table.columns, "rows": analysis.table.rows},
        "figures": [{"name": f.name, "caption": f.caption} for f in analysis.figures],
        **analysis.result,
    }


def analyze_path(
    path: str | Path, task: str | None = None, checkpoint: str | None = None, options: Mapping[str, Any] | None = None,
    limits: Limits | None = None, name: str | None = None,
) -> tuple[dict[str, Any], Analysis]:
    """Check ``path``, pick its capability, analyse it.

    ``name`` is the file name to report (default: ``path``'s name). ``options`` are passed
    on where the picked capability lists them (an annotation means nothing to an X-ray).

    Returns:
        ``(envelope, analysis)``: the JSON result (see :func:`envelope`) and the
        capability's :class:`Analysis` (with the figures' PNG bytes).

    Raises:
        InputRejected: the file fails a check (its ``status`` is the HTTP status to answer).
        PulmoError: the capability could not analyse the file.
    """
    path = Path(path)
    info = inspect_file(path, limits or Limits(), name=name)
    cap = pick_task(info, task)
    taken = {k: v for k, v in (options or {}).items() if k in cap.options and v is not None}
    analysis = cap.analyze(path, checkpoint, taken)
    return envelope(analysis, info, sha256_file(path)), analysis
