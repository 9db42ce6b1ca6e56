"""What the app accepts from a browser upload, before ``medtl.io.load_scan`` sees it.

- one file (DICOM, NIfTI, PNG/JPEG/TIFF) is loaded where it is;
- one ``.zip`` (a DICOM series, possibly several) is checked by
  :func:`check_archive` and loaded in place (``medtl.io`` reads members in
  memory, never extracting them);
- several files (the slices of a series) are linked or copied into a fresh
  folder, which is then loaded as a series folder.

Limits refuse zip bombs and absurd uploads with one readable line each.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from medtl._fileutil import pid_alive
from medtl.errors import ScanError
from medtl.io.archive import MAX_RATIO, check_zip
from medtl.io.detect import detect_format

__all__ = ["MAX_FILES", "MAX_RATIO", "MAX_TOTAL_BYTES", "UnsafeUploadError", "check_archive", "check_nifti",
           "private_gradio_cache", "stage_upload"]

#: Largest total (decompressed) size accepted: a whole CT series is a few hundred MB.
MAX_TOTAL_BYTES = 2 * 1024**3
#: Most files in one upload or archive (a long CT series has a few thousand).
MAX_FILES = 10_000


class UnsafeUploadError(ScanError):
    """An upload refused before reading: unsafe archive, too big, too many files."""


def check_archive(path: str | os.PathLike, max_total_bytes: int = MAX_TOTAL_BYTES, max_ratio: float = MAX_RATIO,
                  max_files: int = MAX_FILES) -> int:
    """Refuse an unsafe zip; return its total decompressed size in bytes.

    The member check is :func:`medtl.io.archive.check_zip` (paths escaping the
    archive, symbolic links), here with the upload limits: more than ``max_files``
    members, more than ``max_total_bytes`` decompressed, or a decompressed/compressed
    ratio above ``max_ratio`` (a zip bomb). Messages name the archive by its base name.
    """
    path = Path(path)
    listing = check_zip(path, where=path.name, error=UnsafeUploadError, max_files=max_files,
                        max_total_bytes=max_total_bytes, max_ratio=max_ratio)
    return listing.total_bytes


def check_nifti(path: str | os.PathLike, max_total_bytes: int = MAX_TOTAL_BYTES) -> None:
    """Refuse a NIfTI whose header declares more voxel bytes than ``max_total_bytes``
    (a small ``.nii.gz`` can declare a huge volume); reads the header only, whatever the
    file is named (``stage_upload`` recognises NIfTI by content)."""
    from medtl.io.nifti import _nib_load

    path = Path(path)
    fobj = None
    try:
        img, fobj = _nib_load(path)
        header = img.header
        nbytes = int(np.prod([int(s) for s in header.get_data_shape()], dtype=object)) * \
            header.get_data_dtype().itemsize
    except Exception:  # not our call to judge: load_scan gives the precise error
        return
    finally:
        if fobj is not None:
            fobj.close()
    if nbytes > max_total_bytes:
        raise UnsafeUploadError(path.name, f"declares {nbytes / 2**20:.0f} MB of voxels (limit "
                                f"{max_total_bytes / 2**20:.0f} MB)", "crop or downsample the volume")


def stage_upload(paths: Sequence[str | os.PathLike], workdir: str | os.PathLike,
                 max_total_bytes: int = MAX_TOTAL_BYTES, max_files: int = MAX_FILES) -> Path:
    """What to hand to ``load_scan`` for the uploaded ``paths``: the file itself, a checked
    zip, or (several files) a new folder under ``workdir`` holding them."""
    files = [Path(p) for p in paths if p]
    if not files:
        raise UnsafeUploadError(None, "no file uploaded", "drop a DICOM, NIfTI, PNG/JPEG file or a .zip of a series")
    for f in files:
        if not f.is_file():
            raise UnsafeUploadError(f.name, "the upload did not arrive", "upload it again")
    if len(files) == 1:
        only = files[0]
        if zipfile.is_zipfile(only):
            check_archive(only, max_total_bytes=max_total_bytes, max_files=max_files)
        elif detect_format(only) == "nifti":  # by content: renaming to .bin/.dat must not skip the check
            check_nifti(only, max_total_bytes)
        return only
    if any(zipfile.is_zipfile(f) for f in files):
        raise UnsafeUploadError(None, "a .zip came with other files",
                                "upload either one .zip or the DICOM files of one series, not both")
    if len(files) > max_files:
        raise UnsafeUploadError(None, f"{len(files)} files uploaded (limit {max_files})", "upload one series at a time")
    total = sum(f.stat().st_size for f in files)
    if total > max_total_bytes:
        raise UnsafeUploadError(None, f"{total / 2**20:.0f} MB uploaded (limit {max_total_bytes / 2**20:.0f} MB)",
                                "upload one series at a time")
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=False)
    for n, f in enumerate(files):
        # The index keeps two uploads with the same name apart; only the base name is used.
        target = folder / f"{n:05d}_{f.name}"
        try:
            os.link(f, target)
        except OSError:
            shutil.copyfile(f, target)
    return folder


#: Prefix of the app's working folders under the system temporary folder.
WORKDIR_PREFIX = "medtl-app-"
_PID_FILE = ".medtl-app.pid"


def make_workdir() -> Path:
    """A fresh working folder for this app process, marked with its pid (see :func:`remove_stale_workdirs`)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    (folder / _PID_FILE).write_text(str(os.getpid()))
    return folder


def private_gradio_cache(workdir: str | os.PathLike) -> Path:
    """Gradio's file cache (uploads, the pictures and downloads it serves): ``GRADIO_TEMP_DIR`` when the
    administrator set it, else a ``gradio`` folder inside ``workdir`` (see :func:`make_workdir`: readable
    by this user only, removed with it), which ``GRADIO_TEMP_DIR`` is then set to.

    Gradio's default, ``<tmp>/gradio``, is readable by every local user and keeps each upload under its
    own name (often the patient's) and the overlays drawn from it for an hour, after the server stops too.
    Call it before the page's components are made: they take the folder when they are created.
    """
    chosen = os.environ.get("GRADIO_TEMP_DIR")
    if chosen:
        return Path(chosen)
    folder = Path(workdir) / "gradio"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def remove_stale_workdirs(min_age_s: float = 3600.0) -> list[Path]:
    """Remove working folders (uploads, session outputs) left by app processes that are gone.

    A folder whose pid file names a dead process is removed; one without a pid file (an
    older medtl, or a crash before it was written) once it is older than ``min_age_s``.
    """
    import tempfile
    import time

    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            pid_file = folder / _PID_FILE
            if pid_file.exists():
                stale = not pid_alive(int(pid_file.read_text().strip() or 0))
            else:
                stale = time.time() - folder.stat().st_mtime > min_age_s
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
