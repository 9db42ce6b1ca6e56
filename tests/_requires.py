"""Skip a test module when an optional package is not installed, and only then.

``pytest.importorskip`` also skips when the package is installed but broken (highdicom 0.22 under
pydicom 3 raised ``No module named 'pydicom._storage_sopclass_uids'``): every PACS test was skipped as
if the extra were missing. :func:`requires` skips only when the module asked for is the one missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


def requires(name: str, reason: str | None = None) -> ModuleType:
    """Import ``name``; skip (the whole module, at import) when ``name`` itself is not installed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            pytest.skip(reason or f"needs {name}", allow_module_level=True)
        raise
