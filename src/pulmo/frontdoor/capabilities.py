"""The capability interface: what one analysis of one file needs, for every task.

A capability (lung sounds, respiratory rate, chest X-ray, detection) joins the front door
with one small adapter module that registers an object with this face::

    class MyCapability:
        name = "cxr"                      # the --task name
        kinds = frozenset({"image"})      # file kinds it accepts: "audio" and/or "image"
        options = ("lung_mask",)          # names of per-call options it takes (may be empty)
        def analyze(self, path, checkpoint=None, options=None) -> Analysis: ...

    CAPABILITIES.add("cxr", MyCapability())    # in pulmo/frontdoor/<task>.py

and one name in :func:`_import_all` below; :mod:`pulmo.frontdoor.routing` decides from each
file's content which capabilities run on it. ``analyze`` gets a file that has already passed
:func:`pulmo.frontdoor.inputs.inspect_file` (known kind, within the size limits) and the
routing's content checks (not silent, not blank, in scope); it
returns an :class:`Analysis` whose ``result`` is JSON-serialisable and holds ``model``
(``name``, ``checkpoint`` file name, ``sha256``: the checkpoint file's full SHA-256,
``pulmo_version`` it was trained with; optionally ``evaluation``, one sentence on how good
the model measured, which the report shows). Everything around it (envelope, report, storage, audit) is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pulmo
from pulmo.errors import ConfigError, PulmoError
from pulmo.frontdoor.inputs import InputInfo, Limits, inspect_file
from pulmo.frontdoor.routing import Route, route_file
from pulmo.hashing import sha256_file
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
    ``warnings``: sentences on how far this answer can be trusted (e.g. a model that measured no
    better than a trivial rule), shown beside the headline.
    """

    task: str
    headline: str
    result: dict[str, Any]
    table: Table | None = None
    figures: list[Figure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def trivial_rule_warnings(measured: float | None, trivial: float, figure: str, rule: str, answers: str) -> list[str]:
    """A warning where a model's stored figure ``measured`` (higher is better) is no better than
    ``trivial``, what the trivial ``rule`` scores: its ``answers`` then carry no measured
    information. Empty where it is better, or where no figure is stored.

    >>> trivial_rule_warnings(0.47, 0.5, "its score is", "calling everything normal", "labels")[0]
    'its score is 0.47, no better than calling everything normal (0.50): read its labels as research output, not as findings'
    """
    if measured is None or measured > trivial:
        return []
    return [f"{figure} {measured:.2f}, no better than {rule} ({trivial:.2f}): read its {answers} as research output, "
            "not as findings"]


class Capability(Protocol):
    name: str
    kinds: frozenset[str]
    options: tuple[str, ...]

    def analyze(self, path: Path, checkpoint: str | None = None, options: Mapping[str, Any] | None = None) -> Analysis:
        ...


CAPABILITIES: Registry[Capability] = Registry("capability")
MODEL_KEYS = ("name", "checkpoint", "sha256", "pulmo_version")
ENVELOPE_KEYS = ("task", "pulmo_version", "input", "routing", "warnings", "headline", "table", "figures", "also")


def _import_all() -> None:
    from pulmo.frontdoor import cxr, detect, lung_sounds, resp_rate  # noqa: F401  (registers their capabilities)


def capability(name: str) -> Capability:
    _import_all()
    return CAPABILITIES.get(name)


def capability_names() -> list[str]:
    _import_all()
    return CAPABILITIES.names()


class PipelineCache:
    """A task's inference pipelines, loaded once per checkpoint (``None``: the bundled one) and
    runtime with the checkpoint file's full SHA-256; shared by threads (inference only reads the
    weights).

    ``load(checkpoint)`` builds a pipeline; it is called at most once per checkpoint path and
    runtime. The runtime is ``$PULMO_RUNTIME`` (``--runtime`` of ``pulmo analyze`` and ``pulmo
    serve``; :func:`pulmo.export.use_runtime`): a task without an ONNX export raises a one-line
    ``ConfigError`` under ``onnx`` or ``onnx-int8``.
    """

    def __init__(self, task: str, load: Callable[[str | None], Any]) -> None:
        self.task = task
        self._load = load
        self._pipelines: dict[str, tuple[Any, str]] = {}
        self._lock = threading.Lock()

    def get(self, checkpoint: str | None = None) -> tuple[Any, str]:
        """``(pipeline, checkpoint_sha256)`` for ``checkpoint``."""
        from pulmo.export import check_runtime, default_runtime, use_runtime
        from pulmo.inference.bundled import default_checkpoint

        runtime = default_runtime()
        check_runtime(self.task, runtime)
        key = (str(Path(checkpoint).resolve()) if checkpoint else "") + f"@{runtime}"
        with self._lock:
            if key not in self._pipelines:
                pipe = use_runtime(self.task, self._load(checkpoint), checkpoint, runtime)
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


def rounded(value: Any, digits: int = 4) -> Any:
    """``value`` with every float rounded to ``digits`` decimals, through dicts, lists and tuples:
    JSON without spurious precision (``20.25146484375`` -> ``20.2515``)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def _checked_result(analysis: Analysis) -> dict[str, Any]:
    """``analysis.result`` after checking the capability contract (model keys, no reserved keys)."""
    model = analysis.result.get("model", {})
    missing = [k for k in MODEL_KEYS if not model.get(k)]
    if missing:
        raise ValueError(f"capability {analysis.task!r} returned a result without model {missing}")
    if len(model["sha256"]) != 64:
        raise ValueError(f"capability {analysis.task!r}: model.sha256 must be the checkpoint's full SHA-256 (64 hex)")
    clash = [k for k in ENVELOPE_KEYS if k in analysis.result]
    if clash:
        raise ValueError(f"capability {analysis.task!r} result uses reserved keys {clash}")
    return analysis.result


def _public_model(model: dict[str, Any]) -> dict[str, Any]:
    """A bundled checkpoint is named as ``pulmo.list_models()`` names it; the name it was
    trained under (an experiment row, meaningless to a reader) is kept as ``recipe``."""
    from pulmo.catalog import BUNDLED

    named = {file: name for name, (file, *_rest) in BUNDLED.items()}
    if model.get("checkpoint") in named and model.get("name") != named[model["checkpoint"]]:
        return {**model, "name": named[model["checkpoint"]], "recipe": model["name"]}
    return model


def _part(analysis: Analysis) -> dict[str, Any]:
    """One capability's share of an envelope: task, warnings, headline, table, figures, then its
    result (a bundled model under its public name)."""
    result = _checked_result(analysis)
    return {
        "task": analysis.task,
        "warnings": list(analysis.warnings),
        "headline": analysis.headline,
        "table": None if analysis.table is None else {"columns": analysis.table.columns, "rows": analysis.table.rows},
        "figures": [{"name": f.name, "caption": f.caption} for f in analysis.figures],
        **result, "model": _public_model(result["model"]),
    }


def envelope(analysis: Analysis, info: InputInfo, file_sha256: str, route: Route | None = None,
             also: Sequence[Analysis] = (), failed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The JSON written for one analysis: the capability's result plus what made it and of what.

    Keys: ``task``, ``pulmo_version`` (the running pulmo), ``input`` (name, sha256, bytes,
    kind, format and header facts), ``routing`` (what the file holds, which capabilities ran
    and why, the measurements; see :class:`~pulmo.frontdoor.routing.Route`), ``warnings``
    (sentences: the routing's, then the capability's), ``headline``, ``table``, ``figures`` (name,
    caption), then the capability's own keys, with ``model`` among them; ``also``: the same for
    each further capability that ran on the file (its figure names prefixed with its task, its
    own ``warnings``), or its error where it failed.
    """
    part = _part(analysis)
    return rounded({
        "task": part.pop("task"),
        "pulmo_version": pulmo.__version__,
        "input": {"name": info.name, "sha256": file_sha256, "bytes": info.bytes, "kind": info.kind,
                  "format": info.format, **info.details},
        "routing": None if route is None else route.to_dict(),
        "warnings": ([] if route is None else list(route.warnings)) + part.pop("warnings"),
        **part,
        "also": [_part(a) for a in also] + [{"task": t, "error": msg} for t, msg in (failed or {}).items()],
    })


def run_route(path: str | Path, route: Route, checkpoints: Mapping[str, str | None] | None = None,
              options: Mapping[str, Any] | None = None) -> tuple[Analysis, list[Analysis], dict[str, str]]:
    """Run every capability of ``route`` on ``path``.

    ``checkpoints``: task -> checkpoint (bundled where absent); ``options`` go to the
    capabilities that list them. A further capability's figures are renamed ``<task>-<name>``.

    Returns:
        ``(primary, further, failed)``: the first capability's analysis, the others' that
        succeeded, and ``task -> message`` for those that failed with a user-facing error.

    Raises:
        PulmoError: the first capability could not analyse the file.
    """
    checkpoints = checkpoints or {}
    runs: list[Analysis] = []
    failed: dict[str, str] = {}
    for i, task in enumerate(route.tasks):
        cap = capability(task)
        taken = {k: v for k, v in (options or {}).items() if k in cap.options and v is not None}
        try:
            analysis = cap.analyze(Path(path), checkpoints.get(task), taken)
        except PulmoError as err:
            if i == 0:
                raise
            failed[task] = str(err)
            continue
        if i > 0:
            analysis.figures = [Figure(f"{task}-{f.name}", f.png, f.caption) for f in analysis.figures]
        runs.append(analysis)
    return runs[0], runs[1:], failed


def analyze_path(
    path: str | Path, task: str | None = None, checkpoint: str | None = None, options: Mapping[str, Any] | None = None,
    limits: Limits | None = None, name: str | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Check ``path``, route it by content (or to ``task``), run each routed capability.

    ``name`` is the file name to report (default: ``path``'s name). ``checkpoint`` applies to
    ``task`` when given, else to the primary routed capability. ``options`` are passed on where
    a capability lists them (an annotation means nothing to an X-ray).

    Returns:
        ``(envelope, figures)``: the JSON result (see :func:`envelope`) and ``name -> PNG bytes``
        of every figure it lists.

    Raises:
        InputRejected: the file fails a check or is out of scope (its ``status`` is the HTTP status to answer).
        PulmoError: the capability could not analyse the file.
    """
    path = Path(path)
    info = inspect_file(path, limits or Limits(), name=name)
    route = route_file(path, info, task)
    primary, further, failed = run_route(path, route, {route.tasks[0]: checkpoint} if checkpoint else None, options)
    figures = {f.name: f.png for a in (primary, *further) for f in a.figures}
    return envelope(primary, info, sha256_file(path), route, further, failed), figures
