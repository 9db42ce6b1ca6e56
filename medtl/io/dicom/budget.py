"""What a DICOM header claims, checked against the limits and the bytes present, before any frame work.

A 9 KB file whose header says ``NumberOfFrames = 2147483647`` must be refused in
microseconds, not after building two billion per-frame records: :func:`check_claims`
runs before :func:`~medtl.io.dicom.frames.frames_of` and before decoding.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset

from medtl.errors import CorruptFileError
from medtl.io import limits
from medtl.io.dicom.frames import to_float

#: Transfer syntaxes whose pixel data is encapsulated (one or more fragments per frame).
_NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
#: Each encapsulated frame needs at least one item: an 8-byte item header.
_ITEM_HEADER = 8


def _int(value: Any, default: int) -> int:
    f = to_float(value)
    if f is None:
        return default
    if f != int(f):
        return -1
    return int(f)


def claims(ds: Dataset) -> dict[str, int] | None:
    """``frames, rows, cols, samples, bits`` the header claims (None without Rows/Columns), and
    ``subsampled`` (1 for YBR_FULL_422, whose native data holds two values per pixel, not three)."""
    if "Rows" not in ds or "Columns" not in ds:
        return None
    bits = 32 if "FloatPixelData" in ds else 64 if "DoubleFloatPixelData" in ds else _int(ds.get("BitsAllocated"), 16)
    samples = _int(ds.get("SamplesPerPixel"), 1)
    subsampled = int(samples == 3 and str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422")
    return {"frames": _int(ds.get("NumberOfFrames"), 1), "rows": _int(ds.get("Rows"), 0),
            "cols": _int(ds.get("Columns"), 0), "samples": samples, "bits": bits, "subsampled": subsampled}


def native_bytes(c: dict[str, int], frames: int) -> int:
    """Bytes ``frames`` frames of the :func:`claims` ``c`` take as native (uncompressed) pixel data
    (YBR_FULL_422: two values per pixel, as pydicom's ``get_expected_length`` counts them)."""
    samples = 2 if c.get("subsampled") else c["samples"]
    return math.ceil(frames * c["rows"] * c["cols"] * samples * c["bits"] / 8)


def transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(ts or "1.2.840.10008.1.2")


def pixel_bytes(ds: Dataset) -> int | None:
    """Length of the pixel data element when the data set holds it (None: header only)."""
    for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if key in ds:
            value = ds[key].value
            return len(value) if isinstance(value, (bytes, bytearray)) else None
    return None


def check_claims(ds: Dataset, name: str | os.PathLike, present: int | None) -> int:
    """Refuse a header whose claims exceed the limits or the ``present`` bytes; return decoded bytes.

    ``present`` is the pixel data length (full data set) or an upper bound of it (the
    file size, for a header read alone); None skips the comparison.
    """
    c = claims(ds)
    if c is None:
        return 0
    if c["bits"] not in (1, 8, 16, 32, 64) or c["samples"] not in (1, 3, 4):
        raise CorruptFileError(name, f"header claims {c['bits']} bits allocated and {c['samples']} samples per "
                               "pixel, which no DICOM image has", "re-export the file")
    itemsize = max(c["bits"] // 8, 1)
    what = "header claims"
    decoded = limits.check_pixels(name, what, frames=c["frames"], rows=c["rows"], cols=c["cols"],
                                  samples=c["samples"], itemsize=itemsize)
    if present is not None:
        if transfer_syntax(ds) in _NATIVE:
            needed = native_bytes(c, c["frames"])
            if present < needed:
                raise CorruptFileError(
                    name, f"cannot decode pixel data: {what} {c['frames']} frame(s) of {c['rows']} x {c['cols']}"
                    f" ({limits.human_bytes(needed)} of pixel data) but the file holds {limits.human_bytes(present)}"
                    " (truncated or a forged header)", "re-export or re-download the file")
        elif c["frames"] * _ITEM_HEADER > present:
            raise CorruptFileError(
                name, f"cannot decode pixel data: {what} {c['frames']} compressed frames but the file holds only {limits.human_bytes(present)}"
                " of pixel data (truncated or a forged header)", "re-export or re-download the file")
    return decoded


#: Compressed syntaxes whose frames carry their own size: the JPEG family (baseline, extended,
#: lossless, JPEG-LS) in its frame header (SOF), JPEG 2000 and HTJ2K in its SIZ marker.
_JPEG = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                   "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
_J2K = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                  "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"})


#: RLE Lossless: one fragment per frame, no size in it.
_RLE = "1.2.840.10008.1.2.5"


def codestream_size(frame: bytes, syntax: str) -> tuple[int, int] | None:
    """``(rows, columns)`` that a compressed frame's own header claims (None: not such a frame, or
    not parsed; the decoder then judges it)."""
    if syntax in _JPEG:
        # pydicom's marker parser (private, but the one its JPEG decoders are fed by): no library
        # exposes a JPEG-LS/lossless frame header otherwise.
        from pydicom.pixels.utils import _get_jpg_parameters

        info = _get_jpg_parameters(frame)
        return (int(info["height"]), int(info["width"])) if "height" in info and "width" in info else None
    if syntax in _J2K:
        # SOC then SIZ (ISO/IEC 15444-1 A.5.1): Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz; pydicom's
        # get_j2k_parameters reads precision and sign only. A JP2 wrapper puts boxes in front.
        at = frame.find(b"\xff\x4f\xff\x51", 0, 4096)
        if at < 0 or len(frame) < at + 24:
            return None
        x, y, x0, y0 = struct.unpack(">IIII", frame[at + 8:at + 24])
        return y - y0, x - x0
    return None


def _frames(pixel_data: bytes, n: int) -> Iterator[bytes]:
    """The encapsulated frames one at a time (a long cine is not copied whole before the decoder's own
    pass); broken encapsulation ends them quietly, for the decoder to report."""
    from pydicom.encaps import generate_frames

    try:
        yield from generate_frames(pixel_data, number_of_frames=n)
    except Exception:  # noqa: BLE001
        return


def pixel_data_complete(ds: Dataset) -> bool:
    """Whether native pixel data is as long as Rows x Columns x frames take: what a transfer cut short
    leaves (the last part of a multipart stream still parses as a data set, its pixel value shorter).
    Compressed data passes (a cut there breaks the fragment sequence, which does not parse at all;
    a damaged code stream stored on the PACS is the reader's to report when it is decoded)."""
    c = claims(ds)
    if c is None or "PixelData" not in ds or transfer_syntax(ds) not in _NATIVE:
        return True
    present = pixel_bytes(ds)
    return present is None or present >= native_bytes(c, c["frames"])


def check_pixel_data(ds: Dataset, name: str | os.PathLike) -> None:
    """The pixel data against the header that describes it, before decoding.

    Native data holding a whole frame or more beyond what Rows, Columns and NumberOfFrames
    account for is refused (not padding: a header that lies, e.g. 9 frames of a 10-frame file,
    would silently drop or reshape pixels); a row or more beyond is warned about. Compressed pixel data holding fewer frames than
    NumberOfFrames is refused. Compressed frames whose own headers claim more rows
    or columns than the DICOM header are refused: decoders allocate what the codestream says, so
    a 42 KB file could otherwise ask for gigabytes before any error. Compressed frames cut short
    before their end marker are warned about (decoders fill the rest without an error).
    """
    syntax = transfer_syntax(ds)
    c = claims(ds)
    if c is None or "PixelData" not in ds:
        return
    if syntax in _NATIVE:
        present = pixel_bytes(ds)
        frame, needed = native_bytes(c, 1), native_bytes(c, c["frames"])
        if present is not None and frame > 0 and present - needed >= frame:
            raise CorruptFileError(
                name, f"header claims {c['frames']} frame(s) of {c['rows']} x {c['cols']} "
                f"({limits.human_bytes(needed)} of pixel data) but the file holds {limits.human_bytes(present)}: "
                "the header does not describe the pixels", "re-export the file")
        row = native_bytes({**c, "rows": 1}, 1)
        if present is not None and row > 0 and present - needed >= row:  # padding is a byte or a few, not a row
            warnings.warn(f"{name}: the pixel data holds {limits.human_bytes(present - needed)} more than "
                          f"{c['frames']} frame(s) of {c['rows']} x {c['cols']} take (a row or more): the header may "
                          "understate the image, whose last rows are then not read; check Rows and Columns",
                          stacklevel=2)
        return
    coded = syntax in _JPEG or syntax in _J2K
    if not coded and syntax != _RLE:  # video syntaxes code every frame in one stream
        return
    cut = count = 0
    for count, frame in enumerate(_frames(ds.PixelData, max(c["frames"], 1)), 1):
        if not coded:
            continue
        try:
            size = codestream_size(frame, syntax)
        except Exception:  # noqa: BLE001 - an unparsable frame header: the decoder reports it
            size = None
        if size is not None and (size[0] > c["rows"] or size[1] > c["cols"]):
            raise CorruptFileError(
                name, f"cannot decode pixel data: frame {count}'s compressed stream claims {size[0]} x {size[1]} "
                f"pixels but the header says {c['rows']} x {c['cols']} (a damaged or forged file)",
                "re-export the file")
        # JPEG's EOI and JPEG 2000's EOC are both FF D9, a pair byte stuffing keeps out of coded data;
        # some encoders pad after it. Decoders fill a stream cut before it with grey or zeros, silently.
        cut += b"\xff\xd9" not in frame[-8:]
    if 0 < count < c["frames"]:  # the decoder would stop at the missing one with a bare 'StopIteration'
        raise CorruptFileError(name, f"cannot decode pixel data: header claims {c['frames']} frames but the pixel "
                               f"data holds {count} (truncated or a forged header)", "re-export the file")
    if cut:
        warnings.warn(f"{name}: {cut} of {count} compressed frame(s) end without their end-of-image marker "
                      "(cut short?): part of the image may be filled in by the decoder", stacklevel=2)
