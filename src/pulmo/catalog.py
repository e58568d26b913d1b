"""The bundled models by name, and what a checkpoint says about itself, read without torch.

``pulmo.list_models()`` and ``pulmo models`` come from here: a checkpoint's metadata (task,
name, labels, stored metrics) is read from the pickle inside the ``torch.save`` zip with every
tensor left unread, so listing seven models takes milliseconds instead of importing torch and
loading their weights.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulmo.errors import CheckpointError
from pulmo.hashing import sha256_file

ASSETS = Path(__file__).resolve().parent / "assets"

# name -> (file, task, is the task's default, one line on what it is for)
BUNDLED: dict[str, tuple[str, str, bool, str]] = {
    "lung-sounds": ("lung_sounds_small_cnn.pt", "lung-sounds", True,
                    "compact CNN (ICBHI + KAUH, stethoscope-response augmentation, pretrained encoder, device "
                    "adversary): normal / "
                    "crackle / wheeze / both per respiratory cycle; research only, below chance on the official test"),
    "resp-rate": ("resp_rate_composite.pt", "resp-rate", True,
                  "vote of five LSTM composites: breaths per minute and heavy breathing, recordings of 12 s or more"),
    "resp-rate-short": ("resp_rate_short.pt", "resp-rate", False,
                        "breaths per minute for clips of 4-12 s (used by the front door for short audio)"),
    "resp-rate-at-rest": ("resp_rate_lstm_window15.pt", "resp-rate", False,
                          "rate-only vote of five LSTMs, for breathing at rest (8-30 breaths/min)"),
    "resp-rate-tc-lstm": ("resp_rate_tc_lstm.pt", "resp-rate", False,
                          "heavy-capable vote of three LSTMs trained with time-compressed clips"),
    "cxr": ("cxr_efficientnet_lite0_head.pt", "cxr", True,
            "EfficientNet-Lite0 (ImageNet, frozen) + head: normal / COVID-19 / pneumonia (not COVID-19) on frontal "
            "chest X-rays, 'uncertain' when unsure; leave-one-source-out macro-F1 0.31"),
    "detect": ("detect_yolov5n_baggage.pt", "detect", True,
               "YOLOv5n with tiled inference: objects that are not anatomy on X-ray scans (trained on baggage)"),
}


@dataclass(frozen=True)
class ModelCard:
    """One bundled model: ``name`` (what ``pulmo.load`` takes), ``task``, ``file`` (under the
    package's ``assets/``), ``default`` (the task's default model), ``description``,
    ``size_mb`` and ``metrics`` (as stored in the checkpoint when it was bundled)."""

    name: str
    task: str
    file: str
    default: bool
    description: str
    size_mb: float
    metrics: dict[str, Any]

    @property
    def path(self) -> Path:
        return ASSETS / self.file


class _MetadataUnpickler(pickle.Unpickler):
    """Reads a ``torch.save`` pickle without torch: tensors and arrays become None, plain
    containers and values load, and any other class is refused (a checkpoint is data)."""

    SAFE = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
            ("builtins", "complex")}

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in ("torch", "numpy"):
            return _nothing
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")

    def persistent_load(self, pid: Any) -> None:  # tensor storages: left unread
        return None


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict with every tensor replaced by None (``state_dict`` keeps its keys).

    Raises:
        CheckpointError: not a readable pulmo checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            inner = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            with archive.open(inner) as fh:
                meta = _MetadataUnpickler(fh).load()
    except (OSError, zipfile.BadZipFile, StopIteration, pickle.UnpicklingError, EOFError) as err:
        raise CheckpointError(f"{path.name}: not a readable pulmo checkpoint ({type(err).__name__})") from None
    if not isinstance(meta, dict) or "task" not in meta:
        raise CheckpointError(f"{path.name}: not a pulmo checkpoint (no task in it)")
    return meta


def list_models() -> list[ModelCard]:
    """Every bundled model present in this installation, named ones first, then any other
    checkpoint under ``assets/`` (named by its file stem)."""
    cards, named_files = [], set()
    for name, (file, task, default, description) in BUNDLED.items():
        path = ASSETS / file
        if path.is_file():
            named_files.add(file)
            cards.append(_card(name, path, task, default, description))
    for path in sorted(ASSETS.glob("*.pt")):
        if path.name not in named_files:
            meta = checkpoint_metadata(path)
            cards.append(_card(path.stem, path, meta["task"], False, str(meta.get("name", path.stem))))
    return cards


def model_title(checkpoint_file: str, sha256_prefix: str, stored_name: str) -> str:
    """What to call a model in printed output: a bundled checkpoint (its file name, and its
    SHA-256 starting with ``sha256_prefix``) by its name and the head of its description
    ("resp-rate model: vote of five LSTM composites"), any other by the name stored in it (the
    name of the experiment that trained it)."""
    for name, (file, _, _, description) in BUNDLED.items():
        path = ASSETS / file
        if file == checkpoint_file and sha256_prefix and path.is_file() and sha256_file(path).startswith(sha256_prefix):
            return f"{name} model: {description.split(': ')[0]}"
    return stored_name


def model_header(report: dict[str, Any]) -> str:
    """``"<model title> (<checkpoint file>, sha256 <prefix>)"``: the first words of an evaluation
    report a person reads (``report`` as the ``evaluate`` commands make it)."""
    title = model_title(report["checkpoint"], report["checkpoint_sha256"], report["model"])
    return f"{title} ({report['checkpoint']}, sha256 {report['checkpoint_sha256']})"


def _card(name: str, path: Path, task: str, default: bool, description: str) -> ModelCard:
    meta = checkpoint_metadata(path)
    return ModelCard(name, meta.get("task", task), path.name, default, description,
                     round(path.stat().st_size / 1e6, 2), dict(meta.get("metrics") or {}))


def resolve(model: str | Path) -> tuple[str, Path]:
    """``(name, checkpoint path)`` for a bundled model's name, a task (its default model) or a
    checkpoint file.

    Raises:
        CheckpointError: an unknown name or a missing file.
    """
    if str(model) in BUNDLED:
        file = BUNDLED[str(model)][0]
        if not (ASSETS / file).is_file():
            raise CheckpointError(f"bundled model {model!r} is not in this installation ({file} missing)")
        return str(model), ASSETS / file
    path = Path(model)
    if path.suffix == ".pt" or path.exists():
        if not path.is_file():
            raise CheckpointError(f"checkpoint file not found: {path}")
        return path.stem, path
    raise CheckpointError(f"unknown model {str(model)!r}; bundled: {', '.join(BUNDLED)} (or give a checkpoint file)")


__all__ = ["BUNDLED", "ModelCard", "checkpoint_metadata", "list_models", "resolve"]
