"""Where medtl keeps files between runs: the one place that reads ``MEDTL_CACHE_DIR``.

The cache holds downloaded or imported weights (``weights/``, :mod:`medtl.models.weights`)
and the generated sample cohort (``sample_data/``, :mod:`medtl.demo.cohort`). Kept free of
heavy imports so anything may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$MEDTL_CACHE_DIR`` when set (and not empty), else ``~/.cache/medtl``; read on each call
    so tests and users can change it at run time."""
    root = os.environ.get("MEDTL_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "medtl"
