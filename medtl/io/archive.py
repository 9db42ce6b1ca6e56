"""Zip archives: the one check of their members, shared by ``medtl.io`` and the app's uploads.

medtl reads zip members in memory and never extracts them, yet an archive whose
member names escape it (absolute paths, drive letters, ``..``) or that holds
symbolic links or names a member twice is crafted or broken, one with encrypted members
cannot be read, and one far larger than its packed size is a
zip bomb. :func:`check_zip` refuses all of these, with one line naming the archive,
before a single member is read.
"""

from __future__ import annotations

import os
import posixpath
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from medtl.errors import CorruptFileError, ScanError

__all__ = ["MAX_RATIO", "RATIO_FROM_BYTES", "ZipListing", "check_zip", "member_escapes", "read_member"]

#: Largest decompressed / compressed size ratio of an archive. DICOM with a black
#: background compresses 5-20x; 100x is what crafted archives (zip bombs) show.
MAX_RATIO = 100.0
#: Below this decompressed total the ratio is not checked: a few black slices compress far
#: better than 100x, and so small an archive harms nothing.
RATIO_FROM_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ZipListing:
    """What :func:`check_zip` found: the file members (no folders) and their declared size."""

    members: list[zipfile.ZipInfo]
    total_bytes: int
    packed_bytes: int


def member_escapes(name: str) -> bool:
    """True when a member name would land outside an extraction folder (absolute, drive, ``..``)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return ".." in posixpath.normpath(norm).split("/")


def check_zip(path: str | os.PathLike, *, where: str | None = None, error: type[ScanError] = CorruptFileError,
              max_files: int | None = None, max_total_bytes: int | None = None,
              max_ratio: float | None = None, max_member_bytes: int | None = None,
              ratio_from_bytes: int = 0) -> ZipListing:
    """List a zip's members after refusing an unsafe or unreadable archive.

    Always refused: an unreadable archive, member paths escaping the archive,
    symbolic links, encrypted members and a member name given twice. Refused when a limit
    is given: more than ``max_files`` file members, more than ``max_total_bytes`` decompressed, one member over
    ``max_member_bytes``, or a decompressed/compressed ratio above ``max_ratio`` (once more than
    ``ratio_from_bytes`` decompressed). Sizes are the declared ones; Python's ``zipfile`` never
    returns more bytes than a member declares, so a member lying about its size cannot
    inflate past the check. Errors are ``error`` (a :class:`ScanError`) naming
    ``where`` (default: the path).
    """
    name = str(path) if where is None else where
    try:
        with zipfile.ZipFile(Path(path)) as zf:
            infos = zf.infolist()
    except Exception as exc:  # noqa: BLE001 - zipfile raises many types (BadZipFile, struct.error, ...)
        raise error(name, f"unreadable zip archive ({type(exc).__name__}: {exc})", "re-create the archive") from None
    seen: set[str] = set()
    for info in infos:
        if info.filename in seen:
            raise error(name, f"zip member {info.filename!r} appears twice (which copy is read is undefined); "
                        "archive refused", "re-create the archive")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise error(name, f"zip member {info.filename!r} is encrypted; medtl cannot read password-protected "
                        "archives", "re-create the archive without a password")
        if member_escapes(info.filename):
            raise error(name, f"zip member {info.filename!r} escapes the archive folder; archive refused",
                        "re-create the zip with relative member paths")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise error(name, f"zip member {info.filename!r} is a symbolic link; archive refused",
                        "zip the files themselves, not links to them")
    files = [i for i in infos if not i.is_dir()]
    if max_member_bytes is not None:
        for info in files:
            if info.file_size > max_member_bytes:
                raise error(name, f"zip member {info.filename!r} declares {info.file_size / 2**20:.0f} MB once "
                            f"decompressed (limit {max_member_bytes / 2**20:.0f} MB, MEDTL_MAX_BYTES); archive refused",
                            "a damaged or crafted archive; if real, raise MEDTL_MAX_BYTES")
    total = sum(i.file_size for i in files)
    packed = sum(i.compress_size for i in files)
    if max_files is not None and len(files) > max_files:
        raise error(name, f"{len(files)} files in the archive (limit {max_files})", "upload one series at a time")
    if max_total_bytes is not None and total > max_total_bytes:
        raise error(name, f"{total / 2**20:.0f} MB once decompressed (limit {max_total_bytes / 2**20:.0f} MB)",
                    "upload one series at a time")
    if max_ratio is not None and total > ratio_from_bytes and total > max_ratio * max(packed, 1):
        raise error(name, f"decompresses {total / max(packed, 1):.0f}x (limit {max_ratio:g}x); looks like a zip "
                    "bomb, archive refused", "re-create the archive from the DICOM files")
    return ZipListing(members=files, total_bytes=total, packed_bytes=packed)


def read_member(zf: zipfile.ZipFile, member: str, name: str, max_bytes: int | None = None) -> bytes:
    """A member's bytes, streamed in chunks with a running cap (``MEDTL_MAX_BYTES`` by default).

    Never trusts the declared size: a member that inflates past the cap, or past what it
    declares, is refused with a :class:`CorruptFileError` naming it, having held at most
    the cap in memory. Damaged data (bad CRC, broken deflate stream) is refused the same way.
    """
    from medtl.io import limits

    cap = limits.current().max_bytes if max_bytes is None else max_bytes
    try:
        info = zf.getinfo(member)
        if info.file_size > cap:
            limits.check_bytes(name, "zip member declares", info.file_size, cap)
        out = bytearray()
        with zf.open(info) as fh:
            while chunk := fh.read(1 << 20):
                out += chunk
                if len(out) > min(cap, info.file_size):
                    raise CorruptFileError(name, f"zip member inflates past {len(out)} bytes, more than it declares "
                                           f"({info.file_size}) or the limit; refused", "re-create the archive")
        return bytes(out)
    except ScanError:
        raise
    except Exception as exc:  # noqa: BLE001 - BadZipFile, zlib.error, EOFError, NotImplementedError (method)...
        raise CorruptFileError(name, f"unreadable zip member ({type(exc).__name__}: {exc})",
                               "re-create the archive") from None
