"""Silencing a library's logger for a while (medtl's readers; the libraries log straight to stderr)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

#: Per logger name: its level before the first open block, and the levels of the blocks open now (in any
#: thread). Blocks of several threads overlap (the app decodes uploads while a batch scores): each one saving
#: and restoring the level itself left the logger silenced for good when they closed out of order.
_OPEN: dict[str, tuple[int, list[int]]] = {}
_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_logger(name: str, level: int) -> Iterator[None]:
    """Logger ``name`` shows only records of ``level`` and above inside the block (the highest level of the
    blocks open in any thread), then its own level is back once the last block closes."""
    logger = logging.getLogger(name)
    with _LOCK:
        before, levels = _OPEN.get(name, (logger.level, []))
        levels.append(level)
        _OPEN[name] = (before, levels)
        logger.setLevel(max(levels))
    try:
        yield
    finally:
        with _LOCK:
            before, levels = _OPEN[name]
            levels.remove(level)
            if levels:
                logger.setLevel(max(levels))
            else:
                logger.setLevel(before)
                del _OPEN[name]
