"""Child processes that never start as a plain fork of a threaded process.

A plain ``fork`` copies only the calling thread: a lock another thread held at that moment (logging's,
an import lock, a progress bar's monitor, a web server's) stays locked for good in the child, which
hangs on first use (a CI run saw an app upload wait its full 120 s limit that way). Children here come
from a fork server instead: a small single-threaded process that has imported the named modules once,
so each child starts warm and inherits none of the caller's threads, locks or file descriptors.
Where the platform has no fork server (Windows), ``spawn``.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable
from multiprocessing.context import BaseContext

__all__ = ["child_context", "warm_up"]

_PRELOAD: set[str] = set()


def child_context(preload: Iterable[str] = ()) -> BaseContext:
    """The ``forkserver`` context with ``preload`` added to what the server imports, else ``spawn``.

    The modules are imported when the server starts (once per process); asked for later, a module
    is imported by each child that needs it instead, which is slower but the same.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    _PRELOAD.update(preload)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(sorted(_PRELOAD))
    return ctx


def warm_up(preload: Iterable[str] = ()) -> None:
    """Start the fork server now, importing ``preload`` in the background, so the first child does not wait."""
    if child_context(preload).get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
