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
