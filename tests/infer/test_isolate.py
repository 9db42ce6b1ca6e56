"""Worker processes for batch reading: order, limits, and nothing inherited from the caller's threads."""

from __future__ import annotations

import os
import threading
import time

import pytest

from medtl.errors import MedtlError
from medtl.infer import isolate
from medtl.infer.isolate import isolated_stream

from ..conftest import lock_held_by_another_thread

_HELD = threading.Lock()  # held by another thread of the scoring process in the test below


def _take_the_lock(study: int) -> dict:
    got = _HELD.acquire(timeout=2)
    if got:
        _HELD.release()
    return {"study": study, "got": got, "pid": os.getpid()}


def _sleepy(study: float) -> dict:
    time.sleep(study)
    return {"study": study}


def test_a_lock_another_thread_holds_is_free_in_the_workers():
    """Under a plain fork a worker would start with ``_HELD`` locked by a thread that does not exist
    there (a logging or progress-bar lock in real runs) and wait on it; workers come from a fork server."""
    with lock_held_by_another_thread(_HELD):
        items = list(isolated_stream([0, 1, 2], _take_the_lock, (), workers=2, timeout=30, ahead=2))
    assert [i["study"] for i in items] == [0, 1, 2]
    assert all(i["got"] for i in items)
    assert all(i["pid"] != os.getpid() for i in items)


def test_a_study_past_the_limit_fails_alone_and_order_is_kept():
    items = list(isolated_stream([0.0, 30.0, 0.0], _sleepy, (), workers=2, timeout=2, ahead=4))
    assert [i["study"] for i in items] == [0.0, 30.0, 0.0]
    assert "longer than the per-study limit of 2 s" in items[1]["error"]
    assert "error" not in items[0] and "error" not in items[2]


def _server_already_running():
    """Start the fork server first, so a module named later is imported by each worker, not preloaded."""
    from multiprocessing import forkserver

    from medtl import _forkserver

    _forkserver.warm_up()
    forkserver.ensure_running()


def test_worker_start_up_is_not_counted_against_a_study():
    _server_already_running()
    from . import _slow_import

    items = list(isolated_stream([1, 2, 3], _slow_import.load, (), workers=2, timeout=1, ahead=2))
    assert [i.get("error") for i in items] == [None, None, None]
    assert [i["study"] for i in items] == [1, 2, 3]


def test_a_worker_that_cannot_start_in_time_is_one_clear_error(monkeypatch):
    _server_already_running()
    from . import _slow_import

    monkeypatch.setattr(isolate, "STARTUP_LIMIT", 0.5)
    with pytest.raises(MedtlError, match="did not start within 0.5 s.*--workers 0"):
        list(isolated_stream([1], _slow_import.load, (), workers=1, timeout=10, ahead=1))


def test_a_worker_that_dies_while_starting_is_one_clear_error(monkeypatch):
    _server_already_running()  # started without the variable below, so its workers cannot import the module
    monkeypatch.setenv("MEDTL_TEST_IMPORTER", str(os.getpid()))
    from . import _breaks_in_workers

    with pytest.raises(MedtlError, match=r"ended while starting \(exit code 1\).*--workers 0"):
        list(isolated_stream([1], _breaks_in_workers.load, (), workers=1, timeout=10, ahead=1))


def _size_limit(study: int) -> dict:
    from medtl.io import limits

    return {"study": study, "max_bytes": limits.current().max_bytes}


def test_workers_read_the_limits_in_the_callers_environment_now(monkeypatch):
    """The fork server keeps the environment of its start; a limit set since must still reach the readers."""
    _server_already_running()
    monkeypatch.setenv("MEDTL_MAX_BYTES", "12345")
    items = list(isolated_stream([1, 2], _size_limit, (), workers=2, timeout=30, ahead=2))
    assert [i["max_bytes"] for i in items] == [12345, 12345]


def test_workers_read_a_limits_override_in_force(monkeypatch):
    """``limits.override`` in the caller reaches the worker processes, over the environment."""
    from medtl.io import limits

    _server_already_running()
    monkeypatch.setenv("MEDTL_MAX_BYTES", "12345")
    with limits.override(max_bytes=6789):
        items = list(isolated_stream([1, 2], _size_limit, (), workers=2, timeout=30, ahead=2))
    assert [i["max_bytes"] for i in items] == [6789, 6789]
    assert list(isolated_stream([3], _size_limit, (), workers=1, timeout=30, ahead=1))[0]["max_bytes"] == 12345
