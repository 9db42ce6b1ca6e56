"""Recognise a file's format from its content, not only its name."""

from __future__ import annotations

import gzip
import os
import stat
import struct
from pathlib import Path

#: Formats ``detect_format`` can return.
FORMATS = ("dicom", "nifti", "image", "zip", "folder")

_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00",  # TIFF little endian
    b"MM\x00*",  # TIFF big endian
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
    b"BM",  # BMP
)


#: A zip's first bytes: a local file header, or the end of central directory record of an empty archive.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _is_nifti_header(head: bytes) -> bool:
    """NIfTI-1 (348-byte header, magic at 344) or NIfTI-2 (540 bytes, magic at 4)."""
    if len(head) >= 348:
        for order in "<>":
            if struct.unpack(f"{order}i", head[:4])[0] == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
                return True
    if len(head) >= 12:
        for order in "<>":
            if struct.unpack(f"{order}i", head[:4])[0] == 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
                return True
    return False


def special_file(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (links followed), else None.

    Such paths are never opened: opening a named pipe waits for a writer, possibly forever,
    and a device such as ``/dev/zero`` never ends.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, what in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "a special file"


def detect_format(path: str | os.PathLike) -> str | None:
    """Return one of :data:`FORMATS` for ``path``, or ``None`` when unrecognised.

    DICOM is recognised by its ``DICM`` magic, or (for preamble-less files) by
    pydicom parsing a header; NIfTI by its header size and magic (gzipped or
    not); images by their magic numbers; zip archives by their first bytes (a damaged
    archive is still reported as a zip, for the reader to refuse as one).
    """
    p = Path(path)
    if p.is_dir():
        return "folder"
    if special_file(p):
        return None
    try:
        with open(p, "rb") as fh:
            head = fh.read(600)
    except OSError:
        return None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(p, "rb") as fh:
                inner = fh.read(600)
        except (OSError, EOFError):
            return None
        return "nifti" if _is_nifti_header(inner) else None
    if _is_nifti_header(head):
        return "nifti"
    if head.startswith(_IMAGE_MAGIC):
        return "image"
    if head[:4] in _ZIP_MAGIC:  # readable or not: a cut archive must be reported as one, not as unknown content
        return "zip"
    from medtl.io.dicom import is_dicom_file  # preamble-less DICOM (no "DICM" magic)

    if is_dicom_file(p):
        return "dicom"
    return None
