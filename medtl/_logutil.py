"""Silencing a library's logger for a while (medtl's readers; the libraries log straight to stderr)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_logger(name: str, level: int) -> Iterator[None]:
    """Logger ``name`` shows only records of ``level`` and above inside the block, then its level is back."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
