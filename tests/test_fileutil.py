"""medtl._fileutil: atomic writes that fail name the file they were writing, and say when the disk is full."""

from __future__ import annotations

import errno
import os

import pytest

from medtl import _fileutil
from medtl._fileutil import atomic_path


def test_a_failed_write_names_the_file_keeps_the_old_one_and_leaves_no_temp(tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("good\n")
    with pytest.raises(OSError) as info:
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")  # what a flush raises: no file name
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(out))
    assert out.read_text() == "good\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


def test_a_library_error_on_a_full_disk_becomes_enospc_naming_the_file(tmp_path, monkeypatch):
    """torch.save says ``unexpected pos``, safetensors ``SafetensorError``: on a full disk, ENOSPC."""
    out = tmp_path / "model.safetensors"
    monkeypatch.setattr(_fileutil.os, "statvfs", lambda p: os.statvfs_result((4096,) * 3 + (0,) * 7))
    with pytest.raises(OSError) as info:
        with atomic_path(out):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(out))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not out.exists()


def test_a_library_error_with_free_space_left_is_raised_as_it_is(tmp_path):
    with pytest.raises(ValueError, match="^bad value$"):
        with atomic_path(tmp_path / "x.json"):
            raise ValueError("bad value")


@pytest.mark.parametrize("exc", [
    RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors
    OSError("With tag (7FE0,0010) got exception: [Errno 28] No space left on device"),  # pydicom, errno None
])
def test_a_full_disk_named_only_in_a_library_message_becomes_enospc(tmp_path, exc):
    """safetensors deletes its file on failure, so the disk is no longer full when the error arrives."""
    out = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as info:
        with atomic_path(out):
            raise exc
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(out))


def test_a_folder_that_refuses_the_temporary_file_names_the_file_asked_for(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".map.png.abcd1234.tmp.png"))

    monkeypatch.setattr(_fileutil.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as info:
        with atomic_path(tmp_path / "map.png"):
            pass
    assert (info.value.errno, info.value.filename) == (errno.EROFS, str(tmp_path / "map.png"))


def test_a_folder_given_as_the_file_is_refused_before_the_write_and_left_as_it_was(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "kept.txt").write_text("x")
    ran = []
    with pytest.raises(IsADirectoryError, match="is a folder: give a file name") as err:
        with atomic_path(folder) as tmp:
            ran.append(tmp)
    assert err.value.filename == str(folder)
    assert not ran  # refused before any work is written
    assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
