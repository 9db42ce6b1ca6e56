"""Is this DICOM, and is it an image? Sniffing files and reading their data sets.

A file is DICOM when it has ``DICM`` at byte 128 or parses as a preamble-less data
set; everything else (README, thumbnails) is skipped without an error. Header
reads stop before the pixels so that a whole folder can be grouped cheaply.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
import zlib
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medtl._logutil import quiet_logger
from medtl.errors import CorruptFileError, MedtlError, NotAnImageError, one_line
from medtl.io import limits
from medtl.io.dicom.sop import FIX_REFERENCED, raise_if_not_image, sop_class_name

PathLike = str | os.PathLike


def quiet_pydicom_log() -> contextlib.AbstractContextManager[None]:
    """pydicom's log lines silenced (errors aside): they quote the header values they complain about
    (a birth date, a UID), and medtl's logs never carry patient data. Warnings are the caller's."""
    return quiet_logger("pydicom", logging.ERROR)


def is_fatal(exc: BaseException) -> bool:
    """Exceptions that must propagate even from the catch-all around decoders.

    Rust-backed decoders (pylibjpeg-rle) raise ``pyo3_runtime.PanicException``, a
    ``BaseException``, on corrupt data, so decoder calls catch ``BaseException``.
    """
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


def _raw_dicom_start(head: bytes) -> bool:
    """True when ``head`` starts like a preamble-less data set: a group 0002/0008 tag."""
    return head[:2] in (b"\x02\x00", b"\x08\x00") or head[:2] in (b"\x00\x02", b"\x00\x08")


def _looks_like_dataset(ds: Dataset) -> bool:
    """True when a force-parsed data set holds what an image object must (SOP class, group 0008/0028)."""
    return "SOPClassUID" in ds or any(elem.tag.group in (0x0008, 0x0028) for elem in ds)


def _sniff(fh: BinaryIO) -> str | None:
    """``"dicm"`` (Part 10 file), ``"raw"`` (may be a preamble-less data set) or None."""
    head = fh.read(132)
    fh.seek(0)
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicm"
    return "raw" if _raw_dicom_start(head) else None


def is_dicom_file(path: PathLike) -> bool:
    """Whether ``path`` is a DICOM file: ``DICM`` at byte 128, or a preamble-less data set
    that pydicom parses into SOP Class UID or group 0008/0028 elements. Never raises."""
    try:
        with open(path, "rb") as fh:
            kind = _sniff(fh)
            if kind == "dicm":
                return True
            if kind is None:
                return False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(fh, force=True, stop_before_pixels=True)
            return _looks_like_dataset(ds)
    except BaseException as exc:  # noqa: BLE001 - must never raise; see is_fatal
        if is_fatal(exc):
            raise
        return False


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a preamble-less data set the transfer syntax it was read with, so pydicom decodes it."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = pydicom.dataset.FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                              ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


#: Inflated bytes of a deflated data set kept to read its header before pydicom inflates it all.
_DEFLATE_HEAD = 1 << 20


def check_deflated(fh: BinaryIO, name: str) -> None:
    """Refuse a Deflated Explicit VR data set that inflates beyond ``MEDTL_MAX_BYTES`` or claims too much.

    pydicom inflates such a data set whole, in memory, before reading a single tag, even
    for a header read: a 500 KB file can inflate to gigabytes. Here it is inflated in
    chunks (output counted, not kept, beyond the first MiB, whose header is checked with
    :func:`~medtl.io.dicom.budget.check_claims`). Leaves ``fh`` where it was.
    """
    from medtl.io.dicom.budget import check_claims

    start = fh.tell()
    try:
        try:
            pydicom.filereader.read_preamble(fh, force=True)
            meta = pydicom.filereader._read_file_meta_info(fh)
        except Exception:  # noqa: BLE001 - not our job to judge the meta here; pydicom will
            return
        if str(meta.get("TransferSyntaxUID", "")) != DeflatedExplicitVRLittleEndian:
            return
        cap = limits.current().max_bytes
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total, head = 0, bytearray()
        try:
            while chunk := fh.read(1 << 20):
                data = chunk
                while data:
                    out = inflater.decompress(data, 1 << 22)
                    total += len(out)
                    if len(head) < _DEFLATE_HEAD:
                        head += out[: _DEFLATE_HEAD - len(head)]
                    if total > cap:
                        limits.check_bytes(name, "deflated data set inflates to more than", total, cap)
                    data = inflater.unconsumed_tail
                if inflater.eof:
                    break
        except zlib.error as exc:
            raise CorruptFileError(name, f"deflated data set is damaged ({exc})", "re-export the file") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(bytes(head)), force=True, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a header longer than the kept head: the size cap still holds
            return
        ds.file_meta = meta
        check_claims(ds, name, total)
    finally:
        fh.seek(start)


def _open(src: str | BinaryIO, name: str) -> tuple[BinaryIO, bool, int]:
    """``src`` opened, whether to close it, and its size from the current position."""
    if isinstance(src, str):
        try:
            size = os.path.getsize(src)
            return open(src, "rb"), True, size  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise CorruptFileError(name, f"cannot open ({exc.strerror})", "check permissions") from exc
    pos = src.tell()
    size = src.seek(0, 2) - pos
    src.seek(pos)
    return src, False, size


def _check(fh: BinaryIO, name: str, size: int) -> None:
    """The size and deflate checks, before anything more than the first bytes is read."""
    limits.check_bytes(name, "file is", size)
    check_deflated(fh, name)


def read_header(src: str | BinaryIO, name: str) -> Dataset | None:
    """Header (no pixels) of one candidate file, or None if it is clearly not DICOM.

    Raises :class:`CorruptFileError` for a file marked DICOM whose header is malformed.
    """
    fh, close, size = _open(src, name)
    try:
        kind = _sniff(fh)
        if kind is None:
            return None  # not DICOM (a movie beside the series): its size is not the series' concern
        _check(fh, name, size)
        try:
            with warnings.catch_warnings():
                if kind == "raw":
                    warnings.simplefilter("ignore")
                ds = pydicom.dcmread(fh, force=True, stop_before_pixels=True)
        except BaseException as exc:  # noqa: BLE001
            if is_fatal(exc) or isinstance(exc, MedtlError):
                raise
            if kind == "raw":
                return None
            raise CorruptFileError(name, f"malformed DICOM header ({one_line(exc, 160, typed=False)})",
                                   "re-export the file") from exc
        if kind == "raw" and not _looks_like_dataset(ds):
            return None
        if len(ds) == 0:  # marked DICOM, yet not one element after the file meta: cut there, or garbage
            raise CorruptFileError(name, "malformed DICOM file: no data element could be read after the file meta "
                                   "information (truncated or damaged)", "re-export or re-download the file")
        _ensure_transfer_syntax(ds)
        return ds
    finally:
        if close:
            fh.close()


def read_full(src: str | BinaryIO, name: str) -> Dataset:
    """The whole data set, pixel data included (not yet decoded), after the size and deflate checks."""
    fh, close, size = _open(src, name)
    try:
        _check(fh, name, size)
        try:
            ds = pydicom.dcmread(fh, force=True)
        except BaseException as exc:  # noqa: BLE001
            if is_fatal(exc):
                raise
            raise CorruptFileError(name, f"malformed DICOM file ({one_line(exc, 160, typed=False)})",
                                   "re-export the file") from exc
    finally:
        if close:
            fh.close()
    _ensure_transfer_syntax(ds)
    return ds


def has_pixels(ds: Dataset) -> bool:
    """True when ``ds`` carries pixel data of any kind (integer, float or double)."""
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def check_readable_image(full: Dataset, src: str | BinaryIO, name: str) -> None:
    """Refuse non-image objects (before decoding) and data sets that lost their pixels."""
    if has_pixels(full) and "Rows" in full:
        raise_if_not_image(full, name)
        return
    # pydicom silently returns an empty data set when a sequence runs past the end
    # of the file: read the header alone to tell a cut-short file from a non-image.
    if isinstance(src, io.BytesIO):
        src.seek(0)
    header = read_header(src, name)
    if header is not None and len(header) > len(full):
        raise_if_not_image(header, name)
        raise CorruptFileError(name, "pixel data is missing or cut short (truncated file)",
                               "re-export or re-download the file")
    raise_if_not_image(full, name)
    sop_name = sop_class_name(full)
    if sop_name.endswith("Image Storage"):
        raise CorruptFileError(name, f"{sop_name} object without pixel data (truncated file?)",
                               "re-export or re-download the file")
    raise NotAnImageError(name, "DICOM object without pixel data holds no image to classify",
                          FIX_REFERENCED)
