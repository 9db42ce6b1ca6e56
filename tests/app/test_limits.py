import os
import threading
import time

import pytest

from medtl.app.limits import RequestTimeout, app_timeout, call_with_limit
from medtl.errors import MedtlError, ScanError

from ..conftest import lock_held_by_another_thread


def _slow(seconds):
    time.sleep(seconds)
    return "done"


def _fails():
    raise ScanError("x.dcm", "broken", "fix it")


def _crash():
    raise ZeroDivisionError("deep inside a decoder")


def _die():
    os._exit(3)


_HELD = threading.Lock()  # held by a "server thread" in the test below


def _take_the_lock():
    return _HELD.acquire(timeout=2), os.getppid()


def test_a_lock_another_thread_holds_is_not_inherited_by_the_reading_child():
    """Under a plain fork the child would start with ``_HELD`` locked by a thread that does not exist there,
    and a reader needing it would hang until the limit; the child comes from the fork server instead."""
    with lock_held_by_another_thread(_HELD):
        got, parent = call_with_limit(_take_the_lock, timeout=30)
    assert got and parent != os.getpid()


def test_result_errors_and_crashes_come_back_as_one_line():
    assert call_with_limit(_slow, 0.01, timeout=30) == "done"
    with pytest.raises(ScanError, match="x.dcm: broken"):
        call_with_limit(_fails, timeout=30)
    with pytest.raises(MedtlError, match="ZeroDivisionError: deep inside a decoder"):
        call_with_limit(_crash, timeout=30)
    with pytest.raises(MedtlError, match="ended without an answer"):
        call_with_limit(_die, timeout=30)


def test_a_stuck_read_is_stopped_at_the_limit():
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout, match="took longer than 1 s and was stopped"):
        call_with_limit(_slow, 60, timeout=1)
    assert time.monotonic() - t0 < 10


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEDTL_APP_TIMEOUT", "0")
    assert app_timeout() is None
    monkeypatch.setenv("MEDTL_APP_TIMEOUT", "15")
    assert app_timeout() == 15.0
    monkeypatch.setenv("MEDTL_APP_TIMEOUT", "soon")
    with pytest.raises(MedtlError, match="MEDTL_APP_TIMEOUT"):
        app_timeout()


def test_the_app_frees_the_request_and_says_why(client, monkeypatch):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from medtl.demo.cohort import sample_path

    monkeypatch.setenv("MEDTL_APP_TIMEOUT", "0.001")  # read by the in-process server at each request
    with pytest.raises(AppError, match=rf"reading {sample_path('ct3d').name} took longer than 0.001 s and was stopped"):
        client.predict([handle_file(str(sample_path("ct3d")))], "tiny3d", "HiResCAM", 0.4, api_name="/analyze")
    monkeypatch.setenv("MEDTL_APP_TIMEOUT", "120")
    out = client.predict([handle_file(str(sample_path("ct3d")))], "tiny3d", "HiResCAM", 0.4, api_name="/analyze")
    assert any(isinstance(o, dict) and "confidences" in o for o in out)


def _size_limit():
    from medtl.io import limits

    return limits.current().max_bytes


def test_the_reading_child_sees_the_limits_set_since_the_server_started(monkeypatch):
    call_with_limit(_slow, 0, timeout=30)  # the fork server is running now
    monkeypatch.setenv("MEDTL_MAX_BYTES", "12345")
    assert call_with_limit(_size_limit, timeout=30) == 12345


def test_the_reading_child_sees_a_limits_override_in_force():
    from medtl.io import limits

    with limits.override(max_voxels=4321):
        assert call_with_limit(_voxel_limit, timeout=30) == 4321
    assert call_with_limit(_voxel_limit, timeout=30) == limits.Limits().max_voxels


def _voxel_limit():
    from medtl.io import limits

    return limits.current().max_voxels


UPLOAD = "/uploads/DOE_JOHN_MRN483920.dcm"  # a file named after its patient, as exports often are


def _crash_naming_the_patient():
    raise ValueError(f"cannot parse {UPLOAD}")


def test_a_reading_crash_tells_the_server_log_its_type_and_frames_never_its_message(capsys):
    """The child's report of an unexpected failure goes to the server's stderr: its message can quote the
    upload's name (a patient's), so only the type and the stack frames are printed; the page gets the line."""
    from medtl.app.limits import _child

    sent = []
    conn = type("Conn", (), {"send": lambda self, x: sent.append(x), "close": lambda self: None})()
    _child(conn, _crash_naming_the_patient, ())
    err = capsys.readouterr().err
    assert "reading an upload failed with ValueError" in err and "_crash_naming_the_patient" in err
    assert "DOE_JOHN" not in err
    (ok, exc), = sent
    assert not ok and "DOE_JOHN_MRN483920.dcm" in str(exc)  # shown in the page of the person who uploaded it
