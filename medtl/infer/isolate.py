"""Worker processes with a per-study wall-clock limit, results in study order.

One stuck decode (a hostile file, a decoder that loops) must not stall the ordered
stream: each study runs in a worker process; when it exceeds ``timeout`` seconds the
worker is killed and replaced, the study gets an error item (``"took longer than ..."``)
and the stream goes on. A worker that dies (killed by the OS for memory, a crash in a C
decoder) fails only the study it was reading. Workers come from :mod:`medtl._forkserver`, never a
plain fork of the scoring process (its threads' locks, and its open files such as the output lock,
stay behind).

A study's clock starts when a worker that is ready takes it: start-up (the fork server's and
the worker's imports, seconds on a busy machine) never counts against a study, but is bounded
by :data:`STARTUP_LIMIT`.

With ``workers=0`` studies are read in the calling process; the limit is then enforced
with ``SIGALRM`` (main thread only), which interrupts Python code but not a C decoder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Sequence
from multiprocessing.connection import wait
from typing import Any

from medtl import _forkserver
from medtl.errors import MedtlError
from medtl.io import limits

__all__ = ["DEFAULT_STUDY_TIMEOUT", "StudyTimeout", "isolated_stream", "in_process_stream", "study_timeout",
           "warm_up"]

#: Default per-study wall-clock limit (seconds); ``MEDTL_STUDY_TIMEOUT`` or ``--study-timeout`` change it.
DEFAULT_STUDY_TIMEOUT = 600.0
#: Seconds a new worker may take to start (imports included) before the stream gives up with an error.
STARTUP_LIMIT = 120.0
_READY = "ready"


class StudyTimeout(MedtlError):
    """Raised in the calling process (``workers=0``) when a study runs past its limit."""


def study_timeout(value: float | None = None) -> float | None:
    """The limit in force: ``value``, else ``MEDTL_STUDY_TIMEOUT``, else the default; 0 or less: none."""
    if value is None:
        raw = os.environ.get("MEDTL_STUDY_TIMEOUT", "").strip()
        try:
            value = float(raw) if raw else DEFAULT_STUDY_TIMEOUT
        except ValueError:
            raise MedtlError(f"MEDTL_STUDY_TIMEOUT={raw!r} is not a number of seconds") from None
    return value if value and value > 0 else None


def timeout_message(seconds: float) -> str:
    return (f"took longer than the per-study limit of {seconds:g} s; stopped (a damaged or huge study? "
            "raise --study-timeout / MEDTL_STUDY_TIMEOUT if it is real)")


def _error_item(study: Any, reason: str, seconds: float) -> dict[str, Any]:
    return {"study": study, "x": None, "error": reason, "format": "", "shape": "", "notes": "", "scan": None,
            "seconds": seconds}


def _worker(conn: Any, load: Callable[..., dict], args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(1)
    conn.send(_READY)  # ``load`` and its module were imported on the way here
    parent = os.getppid()
    while True:
        try:
            # A SIGKILLed run closes its end of the pipe (EOF here) and its fork server, this
            # worker's parent, exits with it: either way no worker outlives the run.
            while not conn.poll(1.0):
                if os.getppid() != parent:
                    return
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        index, study = msg
        conn.send((index, load(study, *args)))


def warm_up(load: Callable[..., dict]) -> None:
    """Start the workers' fork server now: it imports ``load``'s module while the caller does other work."""
    _forkserver.warm_up([load.__module__])


def isolated_stream(studies: Sequence[Any], load: Callable[..., dict], args: tuple, workers: int,
                    timeout: float | None, ahead: int) -> Generator[dict, None, None]:
    """``load(study, *args)`` for each study in ``workers`` processes, yielded in study order.

    ``load`` and the studies travel to the workers by pickling (``load``: a module-level
    function, whose module the fork server imports once). At most ``ahead`` studies are read
    beyond the next one to yield. Closing the generator stops every worker.
    """
    ctx = _forkserver.child_context([load.__module__])
    environ = limits.environ()  # a limits.override in force now reaches every worker, restarted ones too
    slots: list[dict[str, Any]] = []

    def start() -> dict[str, Any]:
        since = time.monotonic()
        parent, child = ctx.Pipe()
        proc = _forkserver.process(ctx, _worker, (child, load, args), environ)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "task": None, "ready": False, "since": since}

    def stop(slot: dict[str, Any], kill: bool) -> None:
        proc = slot["proc"]
        if kill:
            proc.kill()
        else:
            with contextlib.suppress(OSError, BrokenPipeError):
                slot["conn"].send(None)
        proc.join(timeout=0 if kill else 2)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2)
        slot["conn"].close()

    def started(slot: dict[str, Any], readable: bool, now: float) -> None:
        """Mark ``slot`` ready when its worker says so; raise if it died or took too long starting."""
        if readable:
            try:
                if slot["conn"].recv() == _READY:
                    slot["ready"] = True
                    return
            except (EOFError, OSError):
                slot["proc"].join(1)  # reaped, so its exit code is known
            raise MedtlError(f"a decoding worker ended while starting (exit code {slot['proc'].exitcode}); "
                             "run with --workers 0 to read in this process")
        if now - slot["since"] >= STARTUP_LIMIT:
            raise MedtlError(f"a decoding worker did not start within {STARTUP_LIMIT:g} s (an overloaded "
                             "machine?); run with --workers 0 to read in this process")

    results: dict[int, dict] = {}
    submitted = yielded = 0
    n = len(studies)
    try:
        slots = [start() for _ in range(max(1, min(workers, n)))]
        while yielded < n:
            if yielded in results:
                yield results.pop(yielded)
                yielded += 1
                continue
            for slot in slots:
                if slot["ready"] and slot["task"] is None and submitted < n and submitted - yielded < max(ahead, 1):
                    slot["conn"].send((submitted, studies[submitted]))
                    slot["task"] = (submitted, time.monotonic())
                    submitted += 1
            watched = [s for s in slots if s["task"] is not None or not s["ready"]]
            deadlines = [s["since"] + STARTUP_LIMIT for s in watched if not s["ready"]]
            if timeout is not None:
                deadlines += [s["task"][1] + timeout for s in watched if s["task"] is not None]
            now = time.monotonic()
            ready = wait([s["conn"] for s in watched], timeout=max(0.0, min(deadlines) - now) if deadlines else None)
            now = time.monotonic()
            for i, slot in enumerate(slots):
                if not slot["ready"]:
                    started(slot, slot["conn"] in ready, now)
                    continue
                if slot["task"] is None:
                    continue
                index, t0 = slot["task"]
                if slot["conn"] in ready:
                    try:
                        got, item = slot["conn"].recv()
                    except (EOFError, OSError):  # the worker died: fail its study, start another
                        code = slot["proc"].exitcode
                        results[index] = _error_item(
                            studies[index], f"the worker reading it died (exit code {code}; killed for memory? a "
                            "crash in a decoder?)", now - t0)
                        stop(slot, kill=True)
                        slots[i] = start()
                        continue
                    results[got] = item
                    slot["task"] = None
                elif timeout is not None and now - t0 >= timeout:
                    results[index] = _error_item(studies[index], timeout_message(timeout), now - t0)
                    stop(slot, kill=True)
                    slots[i] = start()
    finally:
        for slot in slots:
            stop(slot, kill=slot["task"] is not None)


def in_process_stream(studies: Sequence[Any], load: Callable[..., dict], args: tuple,
                      timeout: float | None) -> Generator[dict, None, None]:
    """The same in this process; the limit via ``SIGALRM`` when on the main thread (Python code only)."""
    use_alarm = timeout is not None and hasattr(signal, "setitimer") and \
        threading.current_thread() is threading.main_thread()
    for study in studies:
        if not use_alarm:
            yield load(study, *args)
            continue
        t0 = time.monotonic()

        def expire(signum: int, frame: Any) -> None:
            raise StudyTimeout(timeout_message(timeout))

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            item = load(study, *args)
        except StudyTimeout as exc:
            item = _error_item(study, str(exc), time.monotonic() - t0)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        yield item
