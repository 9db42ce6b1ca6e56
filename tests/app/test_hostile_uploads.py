"""App uploads and shutdown with hostile input (issue 18): NIfTI checked by content, stale folders, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from medtl.app.uploads import UnsafeUploadError, make_workdir, remove_stale_workdirs, stage_upload
from tests.io.hostile import _gzip_stream, _nifti_header


@pytest.mark.parametrize("name", ["claim.nii.gz", "claim.bin", "claim.dat", "claim"])
def test_nifti_size_check_cannot_be_skipped_by_renaming(tmp_path, name):
    path = _gzip_stream(tmp_path / name, _nifti_header((1200, 1200, 1200)), 0)
    with pytest.raises(UnsafeUploadError, match=f"{name}: declares 3296 MB of voxels"):
        stage_upload([path], tmp_path / "work")


def test_stale_work_folders_of_dead_servers_are_removed_at_start():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = make_workdir()
    (stale / ".medtl-app.pid").write_text(str(dead.pid))
    (stale / "upload.dcm").write_bytes(b"PHI")
    mine = make_workdir()
    try:
        removed = remove_stale_workdirs()
        assert stale in removed and not stale.exists()
        assert mine.exists() and mine not in removed
    finally:
        import shutil

        shutil.rmtree(mine, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    assert Path(tempfile.gettempdir()) in stale.parents


def test_sigterm_stops_the_server_like_ctrl_c(monkeypatch):
    from medtl.app import app as app_mod

    previous = signal.getsignal(signal.SIGTERM)
    try:
        app_mod._stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.1) if hasattr(signal, "sigtimedwait") else None
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_app_on_a_busy_port_says_so_in_one_line_and_never_that_it_serves(monkeypatch, capsys):
    """It printed "serving on http://127.0.0.1:PORT" (the first app's address) and then failed as an internal
    error quoting Gradio's advice (GRADIO_SERVER_PORT, ``launch()``'s parameter) instead of --port."""
    import socket

    import gradio as gr

    from medtl.app import app as app_mod
    from medtl.errors import MedtlError

    monkeypatch.setattr(app_mod, "model_choices", lambda specs: {})
    def page(*args, **kwargs) -> gr.Blocks:
        with gr.Blocks() as demo:
            gr.Markdown("a page")
        return demo

    monkeypatch.setattr(app_mod, "build_app", page)
    monkeypatch.setattr(app_mod, "_stop_on_sigterm", lambda: None)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MedtlError) as info:
            app_mod.serve(["run"], port=port)
    assert str(info.value) == (f"127.0.0.1:{port} is already in use (another medtl app or server?); stop it or "
                               "choose another port with --port")
    assert "serving on" not in capsys.readouterr().out
