"""Child processes that never start as a plain fork of a threaded process.

A plain ``fork`` copies only the calling thread: a lock another thread held at that moment (logging's,
an import lock, a progress bar's monitor, a web server's) stays locked for good in the child, which
hangs on first use (a CI run saw an app upload wait its full 120 s limit that way). Children here come
from a fork server instead: a small single-threaded process that has imported the named modules once,
so each child starts warm and inherits none of the caller's threads, locks or file descriptors (its
environment is passed on: :func:`process`). Where the platform has no fork server (Windows), ``spawn``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Mapping
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

__all__ = ["child_context", "process", "warm_up"]

#: What the process's one fork server imports when it starts (every caller's modules so far)
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


def process(ctx: BaseContext, target: Callable[..., Any], args: tuple,
            environ: Mapping[str, str] | None = None) -> BaseProcess:
    """A daemon child of ``ctx`` running ``target(*args)`` in ``environ`` (default: this process's
    environment as it is now).

    A fork server keeps the environment of its start, but readers look their limits up there at each
    call (``MEDTL_MAX_*``, :mod:`medtl.io.limits`): one set since must reach the child, as a fork would.
    Callers that read scans pass ``medtl.io.limits.environ()``, which adds a ``limits.override`` in force.
    """
    env = dict(os.environ if environ is None else environ)
    return ctx.Process(target=_in_environ, args=(env, target, args), daemon=True)


def _in_environ(environ: dict[str, str], target: Callable[..., Any], args: tuple) -> None:
    os.environ.clear()
    os.environ.update(environ)
    target(*args)
