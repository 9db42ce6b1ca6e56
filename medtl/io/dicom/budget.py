"""What a DICOM header claims, checked against the limits and the bytes present, before any frame work.

A 9 KB file whose header says ``NumberOfFrames = 2147483647`` must be refused in
microseconds, not after building two billion per-frame records: :func:`check_claims`
runs before :func:`~medtl.io.dicom.frames.frames_of` and before decoding.
"""

from __future__ import annotations

import math
import os
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
    """``frames, rows, cols, samples, bits`` the header claims (None without Rows/Columns)."""
    if "Rows" not in ds or "Columns" not in ds:
        return None
    bits = 32 if "FloatPixelData" in ds else 64 if "DoubleFloatPixelData" in ds else _int(ds.get("BitsAllocated"), 16)
    return {"frames": _int(ds.get("NumberOfFrames"), 1), "rows": _int(ds.get("Rows"), 0),
            "cols": _int(ds.get("Columns"), 0), "samples": _int(ds.get("SamplesPerPixel"), 1), "bits": bits}


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
        values = c["frames"] * c["rows"] * c["cols"] * c["samples"]
        if transfer_syntax(ds) in _NATIVE:
            needed = math.ceil(values * c["bits"] / 8)
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
