"""kerspec: Keras-style models as YAML specs, compiled to NumPy and trained on the CPU."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kerspec.version import __version__

__all__ = ["KerspecError", "Model", "__version__", "from_yaml", "load"]

if TYPE_CHECKING:
    from kerspec.api import Model, from_yaml, load
    from kerspec.errors import KerspecError

# Imported on first use, so that `kerspec --help` and the start-up of every command pay only for
# what they run (numpy, pydantic and the layer catalog take most of a second to import).
_LAZY = {
    "Model": "kerspec.api",
    "from_yaml": "kerspec.api",
    "load": "kerspec.api",
    "KerspecError": "kerspec.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    try:
        return importlib.import_module(
            f"{__name__}.{name}"
        )  # `kerspec.api` without importing it first
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
