"""Where a series' files come from: a folder (recursive), a ``.zip`` or a list of files.

Each candidate file becomes an :class:`Entry`; :class:`EntrySource` opens it for
pydicom. Zip members are read in memory, never extracted, after
:func:`medtl.io.archive.check_zip` has refused unsafe archives, and streamed with a
running cap (:func:`medtl.io.archive.read_member`), never read whole on trust.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from medtl.errors import CorruptFileError, SeriesError
from medtl.io import limits
from medtl.io.archive import MAX_RATIO, RATIO_FROM_BYTES, check_zip, read_member
from medtl.io.detect import detect_format

#: What a series is read from: a folder, a ``.zip``, or the files themselves.
SeriesSource = str | os.PathLike | Sequence[str | os.PathLike]


@dataclass(frozen=True)
class Entry:
    """One candidate file: a path on disk, or a member of a zip archive."""

    name: str  # shown in messages: the path, or "archive.zip:member"
    path: str | None = None
    zip_path: str | None = None
    member: str | None = None
    size: int | None = None  # bytes on disk, or the member's declared decompressed size


def _is_single(source: SeriesSource) -> bool:
    return isinstance(source, (str, os.PathLike))


def source_name(source: SeriesSource) -> str:
    """How messages and ``Scan.source`` name ``source``: the path, or for a list of
    files the folder holding them all (their deepest common folder)."""
    if _is_single(source):
        return str(source)
    folders = [os.path.dirname(os.fspath(f)) or os.curdir for f in source]  # type: ignore[union-attr]
    if not folders:
        return ""
    try:
        return os.path.commonpath(folders)
    except ValueError:  # absolute and relative paths mixed
        return os.path.commonpath([os.path.abspath(f) for f in folders])


def _file_entries(files: Sequence[str | os.PathLike]) -> list[Entry]:
    """Entries of an explicit list of files, sorted like a folder listing (repeats dropped)."""
    if not files:
        raise SeriesError(None, "no files given", "pass a folder, a .zip or a list of DICOM files")
    unique: dict[str, Path] = {}
    for f in files:
        p = Path(f)
        if p.is_dir():
            raise SeriesError(p, "is a folder, not a file (a list holds the series' files)",
                              "pass the folder alone, or the files in it")
        if not p.is_file():
            raise SeriesError(p, "no such file (listed for the series)", "check the path or drop it from the list")
        unique.setdefault(os.path.abspath(p), p)
    return [Entry(name=str(p), path=str(p), size=_size(p)) for p in sorted(unique.values())]


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size
    except OSError:
        return None


def list_entries(source: SeriesSource) -> list[Entry]:
    """All candidate files of ``source``, in sorted name order.

    ``source`` is a folder (searched recursively), a ``.zip`` (members read in
    memory; an unsafe archive is refused whole, see :func:`~medtl.io.archive.check_zip`)
    or a list of files (each must exist).
    """
    if not _is_single(source):
        return _file_entries(source)  # type: ignore[arg-type]
    p = Path(source)  # type: ignore[arg-type]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return [Entry(name=str(f), path=str(f), size=_size(f)) for f in files]
    if p.is_file() and detect_format(p) == "zip":  # a damaged archive too: check_zip says it is unreadable
        listing = check_zip(p, error=CorruptFileError, max_member_bytes=limits.current().max_bytes,
                            max_ratio=MAX_RATIO, ratio_from_bytes=RATIO_FROM_BYTES)
        members = sorted(listing.members, key=lambda i: i.filename)
        return [Entry(name=f"{p}:{i.filename}", zip_path=str(p), member=i.filename, size=i.file_size)
                for i in members]
    if not p.exists():
        raise SeriesError(p, "no such folder or zip file", "check the path")
    raise SeriesError(p, "not a folder or a .zip of DICOM files", "use read_dicom for a single file")


class EntrySource:
    """Opens entries for ``pydicom.dcmread``: a path, or a zip member's bytes in memory.

    A context manager that keeps each archive open once; safe to call from several
    threads (zip reads are serialized by a lock, file paths need none).
    """

    def __init__(self) -> None:
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "EntrySource":
        return self

    def __exit__(self, *exc: object) -> None:
        for zf in self._zips.values():
            zf.close()
        self._zips.clear()

    def __call__(self, entry: Entry) -> str | BinaryIO:
        if entry.path is not None:
            return entry.path
        with self._lock:
            zf = self._zips.get(entry.zip_path)  # type: ignore[arg-type]
            if zf is None:
                zf = self._zips[entry.zip_path] = zipfile.ZipFile(entry.zip_path)  # type: ignore[index,arg-type]
            return io.BytesIO(read_member(zf, entry.member, f"{entry.zip_path}:{entry.member}"))  # type: ignore[arg-type]
