"""PEP 562 lazy exports for a package: its public names load on first use.

``medtl.models``, ``medtl.data`` and ``medtl.transforms`` export names whose modules import torch, MONAI
or scikit-learn (seconds); the config schema and the light CLI commands import these packages only for
their small ``config`` modules, and must not pay for the rest.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, where: Mapping[str, str], first: str | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: a name of ``where`` (name -> submodule) is imported from its
    submodule on first use and kept; any other name is a submodule (``medtl.models.weights``) or an
    AttributeError. ``first``: a submodule imported before any name (one that registers the others)."""
    def __getattr__(name: str) -> Any:
        if name not in where:
            if name.startswith("_") or importlib.util.find_spec(f"{package}.{name}") is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            return importlib.import_module(f"{package}.{name}")
        if first:
            importlib.import_module(f"{package}.{first}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
