"""pulmo: an open toolkit for AI-assisted respiratory screening."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pulmo")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
