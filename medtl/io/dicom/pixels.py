"""The pixel pipeline: decode, Modality LUT or rescale, MONOCHROME1 and palette colour.

Values follow the DICOM pipeline up to the Modality LUT: pydicom decodes (every
transfer syntax its pylibjpeg plugins handle, BitsStored / PixelRepresentation
respected), then the Modality LUT or RescaleSlope/Intercept is applied per frame (CT
comes out in HU, float32), and MONOCHROME1 is inverted so that every grey scan is
MONOCHROME2. Colour comes out as RGB, channel-last. No VOI/window is applied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

from medtl._logutil import quiet_logger
from medtl.errors import CorruptFileError, one_line
from medtl.io.dicom.budget import check_pixel_data
from medtl.io.dicom.frames import Frame
from medtl.io.dicom.sniff import is_fatal
from medtl.io.dicom.sop import transfer_syntax_name


def decode(ds: Dataset, name: str) -> np.ndarray:
    """Decoded pixels as ``(frames, rows, cols[, samples])`` in native byte order."""
    check_pixel_data(ds, name)
    try:
        # pydicom logs each decoder's failure with its traceback before raising: the error below says it in one line
        with quiet_logger("pydicom", logging.CRITICAL):
            arr = ds.pixel_array
    except BaseException as exc:  # noqa: BLE001 - decoders may panic (BaseException)
        if is_fatal(exc):
            raise
        msg = one_line(exc, 160, typed=False)
        low = msg.lower()
        missing_decoder = ("missing dependencies" in low or "no pixel data decoders" in low
                           or "is not supported" in low)
        if missing_decoder:
            fix = ("no installed decoder handles transfer syntax "
                   f"{transfer_syntax_name(ds)}; install pylibjpeg with its libjpeg/openjpeg/rle plugins, "
                   "or convert the file to uncompressed DICOM")
        else:
            fix = "the pixel data is damaged or truncated; re-export the file"
        raise CorruptFileError(name, f"cannot decode pixel data ({msg})", fix) from exc
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if arr.ndim == 2 + (samples > 1):
        arr = arr[None]
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


@dataclass
class Pixels:
    """How raw frames of one data set become output values."""

    lut: bool  # Modality LUT Sequence present
    mono1: bool
    palette: bool
    bits_stored: int
    signed: bool
    lut_depth: int = 16

    @classmethod
    def of(cls, ds: Dataset) -> "Pixels":
        lut_seq = ds.get("ModalityLUTSequence")
        depth = int(lut_seq[0].LUTDescriptor[2]) if lut_seq and "LUTDescriptor" in lut_seq[0] else 16
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        bits_alloc = int(ds.get("BitsAllocated", 16) or 16)
        return cls(lut=bool(lut_seq), mono1=photometric == "MONOCHROME1",
                   palette=photometric == "PALETTE COLOR", lut_depth=depth,
                   bits_stored=int(ds.get("BitsStored", bits_alloc) or bits_alloc),
                   signed=int(ds.get("PixelRepresentation", 0) or 0) == 1)

    def output_range(self, frame: Frame) -> tuple[float, float]:
        """Range of the Modality LUT output, the range MONOCHROME1 is inverted within."""
        if self.lut:
            return 0.0, float(2 ** self.lut_depth - 1)
        if self.signed:
            lo, hi = -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        else:
            lo, hi = 0, 2 ** self.bits_stored - 1
        a, b = lo * frame.slope + frame.intercept, hi * frame.slope + frame.intercept
        return min(a, b), max(a, b)


def needs_float(frames: Sequence[Frame], pixels: Sequence[Pixels]) -> bool:
    return any(p.lut for p in pixels) or any(f.slope != 1.0 or f.intercept != 0.0 for f in frames)


def apply_value_pipeline(raw: np.ndarray, frame: Frame, ds: Dataset, px: Pixels,
                          as_float: bool) -> np.ndarray:
    """Modality LUT / rescale (pydicom), then MONOCHROME1 -> MONOCHROME2.

    MONOCHROME1 is inverted as ``(lo + hi) - x`` where ``[lo, hi]`` is the range the
    Modality LUT can output (stored range from BitsStored/PixelRepresentation, mapped
    by the rescale): that is the range DICOM's MONOCHROME1 display inverts over, it
    keeps integer data inside its dtype, and it does not depend on the image content.
    """
    if px.palette:
        return apply_color_lut(raw, ds)
    if raw.ndim == 3:  # colour: no Modality LUT in DICOM
        return raw
    if px.lut:
        out = apply_modality_lut(raw, ds)
    elif frame.slope != 1.0 or frame.intercept != 0.0:
        # The frame's own values (functional groups may differ per frame), through pydicom.
        proxy = Dataset()
        proxy.RescaleSlope, proxy.RescaleIntercept = frame.slope, frame.intercept
        out = apply_modality_lut(raw, proxy)
    else:
        out = raw
    if as_float:
        with np.errstate(over="ignore"):  # values beyond float32 become inf, which the finiteness check names
            out = out.astype(np.float32, copy=False)
    if px.mono1:
        lo, hi = px.output_range(frame)
        if out.dtype.kind == "f":
            out = np.asarray(lo + hi - out, dtype=out.dtype)
        else:
            out = (int(lo + hi) - out.astype(np.int64)).astype(out.dtype)
    return out
