"""pulmo: an open toolkit for AI-assisted respiratory screening.

>>> import pulmo
>>> pulmo.list_models()                          # bundled models, each task's default marked
>>> pulmo.load("cxr").predict("xray.png")        # same verbs for every task (see pulmo.api)

An input no model was built for raises :class:`PulmoError` (its message says why, in one line).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pulmo.errors import PulmoError

try:
    __version__ = version("pulmo")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["PulmoError", "__version__", "list_models", "load"]


def __getattr__(name: str) -> Any:  # load and list_models on first use: ``import pulmo`` stays light (no torch)
    if name == "load":
        from pulmo.api import load

        return load
    if name == "list_models":
        from pulmo.catalog import list_models

        return list_models
    raise AttributeError(f"module 'pulmo' has no attribute {name!r}")
