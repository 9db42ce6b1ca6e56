"""A wall-clock limit for what one app request reads, so a stuck decode never holds a queue slot.

The upload is read in a child process from :mod:`medtl._forkserver` (medtl's readers imported once,
never a plain fork of the threaded web server, whose child can inherit a held lock). Past ``timeout``
seconds the child is killed, the request fails with one readable line and its slot is free again.
A child that dies (the OS killing it for memory, a crash in a C decoder) fails only that request.
The limit is ``MEDTL_APP_TIMEOUT`` seconds (default 120; 0 turns it off and reads in the server
process).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from medtl import _forkserver
from medtl.errors import MedtlError, one_line
from medtl.io import limits

__all__ = ["DEFAULT_APP_TIMEOUT", "RequestTimeout", "app_timeout", "call_with_limit", "warm_up"]

T = TypeVar("T")
DEFAULT_APP_TIMEOUT = 120.0
#: What the fork server imports once, so each reading child starts with the readers loaded
PRELOAD = ["medtl.app.study"]


class RequestTimeout(MedtlError):
    """An upload took longer to read than the app's limit."""


def app_timeout() -> float | None:
    """``MEDTL_APP_TIMEOUT`` in seconds (default :data:`DEFAULT_APP_TIMEOUT`); ``None`` when 0 or less."""
    raw = os.environ.get("MEDTL_APP_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_APP_TIMEOUT
    except ValueError:
        raise MedtlError(f"MEDTL_APP_TIMEOUT={raw!r} is not a number of seconds") from None
    return value if value > 0 else None


def warm_up() -> None:
    """Start the fork server now (a second or two of imports), so the first upload does not wait for it."""
    _forkserver.warm_up(PRELOAD)


def _child(conn: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        conn.send((True, fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the server as one line
        err = exc if isinstance(exc, MedtlError) else MedtlError(one_line(exc))
        try:
            conn.send((False, err))
        except Exception:  # noqa: BLE001 - an unpicklable error still becomes one line
            conn.send((False, MedtlError(one_line(exc))))
        if not isinstance(exc, MedtlError):  # type and frames for the server's operator, never the message:
            # it can quote the upload's file name (a patient's name) or values from its header
            print(f"reading an upload failed with {type(exc).__name__}\n"
                  f"{''.join(traceback.format_tb(exc.__traceback__))}", file=sys.stderr, flush=True)
    finally:
        conn.close()


def call_with_limit(fn: Callable[..., T], *args: Any, timeout: float | None, what: str = "reading the upload") -> T:
    """``fn(*args)`` in a child process, killed after ``timeout`` seconds (``None``: in this process).
    ``fn`` and ``args`` travel to the child by pickling: a module-level function."""
    if timeout is None:
        return fn(*args)
    ctx = _forkserver.child_context(PRELOAD)
    parent, child = ctx.Pipe(duplex=False)
    proc = _forkserver.process(ctx, _child, (child, fn, args), limits.environ())
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise RequestTimeout(f"{what} took longer than {timeout:g} s and was stopped (a damaged or very large "
                                 f"file?); the server is free again (raise MEDTL_APP_TIMEOUT if the file is real)")
        try:
            ok, value = parent.recv()
        except EOFError:
            raise MedtlError(f"{what} failed: the reading process ended without an answer (out of memory or a "
                             f"decoder crash); try the file with `medtl info`") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    if not ok:
        raise value
    return value
