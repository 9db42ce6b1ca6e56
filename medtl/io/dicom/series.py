"""DICOM reading: one file (single or multi-frame) or a series in a folder / zip.

Everything returns a :class:`~medtl.io.scan.Scan` in medtl's convention: the array is
indexed ``[i, j, k]`` (``[i, j, k, 3]`` for colour) with ``i`` along a row (DICOM column
index), ``j`` down a column (DICOM row index), ``k`` over slices sorted along the slice
normal, and ``affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres (DICOM patient space
is LPS, so the x and y rows are negated).

Pixel values follow the DICOM pipeline up to the Modality LUT: pydicom decodes (all
transfer syntaxes its pylibjpeg plugins handle, BitsStored / PixelRepresentation
respected), then the Modality LUT or RescaleSlope/Intercept is applied per frame (CT
comes out in HU, float32), and MONOCHROME1 is inverted so that every grey scan is
MONOCHROME2. Colour comes out as RGB, channel-last. No VOI/window is applied; the
file's window is kept in ``metadata``.

Objects that hold no image (SEG, RT structure sets/plans/doses, SR, presentation
states, KOS, encapsulated PDF, raw data, DICOMDIR...) raise :class:`NotAnImageError`
before any pixel decoding; damaged files raise :class:`CorruptFileError`.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medtl.errors import CorruptFileError, NotAnImageError, SeriesError, UnsupportedFormatError
from medtl.io._series import Entry, EntrySource, list_entries, order_slices, slice_normal
from medtl.io.scan import Scan

__all__ = ["read_dicom", "read_series", "list_series", "is_dicom_file"]

PathLike = str | os.PathLike

# --------------------------------------------------------------------------- non-image objects

_STORAGE = "1.2.840.10008.5.1.4.1.1."
#: SOP classes that carry no image to classify (exact UIDs).
NON_IMAGE_SOP_CLASSES = frozenset({
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
    _STORAGE + "66",  # Raw Data
    _STORAGE + "67",  # Real World Value Mapping
    _STORAGE + "90.1",  # Content Assessment Results
})
#: UID prefixes of whole families of non-image SOP classes.
NON_IMAGE_SOP_PREFIXES = (
    _STORAGE + "9.",  # waveforms (ECG, audio, hemodynamic...)
    _STORAGE + "11.",  # presentation states
    _STORAGE + "66.",  # registration, fiducials, SEG, surface/label-map segmentation, tractography
    _STORAGE + "68.",  # surface scan mesh / point cloud
    _STORAGE + "88.",  # structured reports, key object selection
    _STORAGE + "104.",  # encapsulated PDF / CDA / STL / OBJ / MTL
    _STORAGE + "200.",  # protocol storage
    _STORAGE + "481.",  # RT objects (RT Image, 481.1, is let through below)
    "1.2.840.10008.5.1.4.34.",  # second-generation RT
    "1.2.840.10008.5.1.4.38.",  # hanging protocols
    "1.2.840.10008.5.1.4.39.",  # colour palettes
)
_IMAGE_EXCEPTIONS = frozenset({_STORAGE + "481.1"})  # RT Image Storage is an image
#: Modalities of non-image objects, used when the SOP class is missing or private.
NON_IMAGE_MODALITIES = frozenset({
    "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE_NONE", "SR", "PR", "KO", "DOC",
    "REG", "FID", "RWV", "PLAN", "ECG", "HD", "AU", "RESP", "AR",
})
_FIX_REFERENCED = "load the referenced image series instead"


def _sop_class(ds: Dataset) -> str:
    sop = ds.get("SOPClassUID")
    if not sop:
        meta = getattr(ds, "file_meta", None)
        sop = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return str(sop or "")


def _non_image_kind(ds: Dataset) -> str | None:
    """``"DICOM <SOP class name> (<modality>)"`` when ``ds`` holds no image, else None."""
    sop = _sop_class(ds)
    modality = str(ds.get("Modality", "") or "").upper()
    listed = sop in NON_IMAGE_SOP_CLASSES or (
        sop.startswith(NON_IMAGE_SOP_PREFIXES) and sop not in _IMAGE_EXCEPTIONS)
    name = UID(sop).name if sop else ""
    unknown_class = not name.endswith("Image Storage")
    if listed or "DirectoryRecordSequence" in ds or (unknown_class and modality in NON_IMAGE_MODALITIES):
        if sop == "1.2.840.10008.1.3.10" or "DirectoryRecordSequence" in ds:
            return "DICOMDIR (a media directory)"
        return f"DICOM {name or 'object'} ({modality or 'no modality'})"
    return None


def _raise_if_not_image(ds: Dataset, name: str) -> None:
    kind = _non_image_kind(ds)
    if kind is not None:
        fix = ("read the folder it indexes with read_series" if kind.startswith("DICOMDIR")
               else _FIX_REFERENCED)
        raise NotAnImageError(name, f"{kind} holds no image to classify", fix)


# --------------------------------------------------------------------------- sniffing and reading

def _is_fatal(exc: BaseException) -> bool:
    """Exceptions that must propagate even from the catch-all around decoders.

    Rust-backed decoders (pylibjpeg-rle) raise ``pyo3_runtime.PanicException``, a
    ``BaseException``, on corrupt data, so decoder calls catch ``BaseException``.
    """
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raw_dicom_start(head: bytes) -> bool:
    """True when ``head`` starts like a preamble-less data set: a group 0002/0008 tag."""
    return head[:2] in (b"\x02\x00", b"\x08\x00") or head[:2] in (b"\x00\x02", b"\x00\x08")


def _looks_like_dataset(ds: Dataset) -> bool:
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
    except BaseException as exc:  # noqa: BLE001 - must never raise; see _is_fatal
        if _is_fatal(exc):
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


def _read_header(src: str | BinaryIO, name: str) -> Dataset | None:
    """Header (no pixels) of one candidate file, or None if it is clearly not DICOM.

    Raises :class:`CorruptFileError` for a file marked DICOM whose header is malformed.
    """
    fh: BinaryIO
    close = isinstance(src, str)
    try:
        fh = open(src, "rb") if isinstance(src, str) else src  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CorruptFileError(name, f"cannot open ({exc.strerror})", "check permissions") from exc
    try:
        kind = _sniff(fh)
        if kind is None:
            return None
        try:
            with warnings.catch_warnings():
                if kind == "raw":
                    warnings.simplefilter("ignore")
                ds = pydicom.dcmread(fh, force=True, stop_before_pixels=True)
        except BaseException as exc:  # noqa: BLE001
            if _is_fatal(exc):
                raise
            if kind == "raw":
                return None
            raise CorruptFileError(name, f"malformed DICOM header ({_one_line(exc)})",
                                   "re-export the file") from exc
        if kind == "raw" and not _looks_like_dataset(ds):
            return None
        _ensure_transfer_syntax(ds)
        return ds
    finally:
        if close:
            fh.close()


def _read_full(src: str | BinaryIO, name: str) -> Dataset:
    """The whole data set, pixel data included (not yet decoded)."""
    try:
        ds = pydicom.dcmread(src, force=True)
    except BaseException as exc:  # noqa: BLE001
        if _is_fatal(exc):
            raise
        raise CorruptFileError(name, f"malformed DICOM file ({_one_line(exc)})", "re-export the file") from exc
    _ensure_transfer_syntax(ds)
    return ds


def _has_pixels(ds: Dataset) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _decode(ds: Dataset, name: str) -> np.ndarray:
    """Decoded pixels as ``(frames, rows, cols[, samples])`` in native byte order."""
    try:
        arr = ds.pixel_array
    except BaseException as exc:  # noqa: BLE001 - decoders may panic (BaseException)
        if _is_fatal(exc):
            raise
        msg = _one_line(exc)
        low = msg.lower()
        missing_decoder = ("missing dependencies" in low or "no pixel data decoders" in low
                           or "is not supported" in low)
        if missing_decoder:
            fix = ("no installed decoder handles transfer syntax "
                   f"{_ts_name(ds)}; install pylibjpeg with its libjpeg/openjpeg/rle plugins, "
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


def _ts_name(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(ts)).name if ts else "unknown"


# --------------------------------------------------------------------------- per-frame attributes

def _float(value: Any) -> float | None:
    """First value of a (possibly multi-valued) numeric element as float, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        if not len(value):
            return None
        value = value[0]
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _vector(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        vec = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return vec if vec.shape == (n,) and np.all(np.isfinite(vec)) else None


@dataclass
class _Frame:
    """What medtl needs of one 2D frame, from classic attributes or functional groups."""

    src: int  # index of the data set (file) in the list being assembled
    index: int  # frame number inside that file
    instance: int
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: np.ndarray | None  # (row spacing, column spacing)
    slice_step: float | None  # SpacingBetweenSlices or SliceThickness
    slope: float
    intercept: float
    window: tuple[float | None, float | None]
    extra: dict[str, Any] = field(default_factory=dict)


def _group_value(ds: Dataset, frame: int, seq: str, attr: str) -> Any:
    """``attr`` for ``frame`` from the per-frame, then shared functional groups, else None."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for groups in (per_frame[frame] if per_frame and frame < len(per_frame) else None,
                   shared[0] if shared else None):
        if groups is None:
            continue
        items = groups.get(seq)
        if items:
            value = items[0].get(attr)
            if value is not None and value != "":
                return value
    return None


def _voi_lut_window(ds: Dataset) -> tuple[float | None, float | None]:
    """A window covering the input range of the first VOI LUT (an approximation of a LUT)."""
    seq = ds.get("VOILUTSequence")
    if not seq or "LUTDescriptor" not in seq[0]:
        return None, None
    n_entries, first, _ = (int(v) for v in seq[0].LUTDescriptor)
    n_entries = n_entries or 65536
    return first + (n_entries - 1) / 2.0, float(n_entries)


def _frames_of(ds: Dataset, src: int) -> list[_Frame]:
    """One :class:`_Frame` per frame of ``ds``; functional groups win over top-level attributes."""
    n = int(_float(ds.get("NumberOfFrames")) or 1)
    instance = int(_float(ds.get("InstanceNumber")) or 0)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    top_ipp = _vector(ds.get("ImagePositionPatient"), 3)
    top_iop = _vector(ds.get("ImageOrientationPatient"), 6)
    top_ps = _vector(ds.get("PixelSpacing"), 2)
    if top_ps is None:
        top_ps = _vector(ds.get("ImagerPixelSpacing"), 2)
    top_step = _float(ds.get("SpacingBetweenSlices")) or _float(ds.get("SliceThickness"))
    top_window = (_float(ds.get("WindowCenter")), _float(ds.get("WindowWidth")))
    if top_window[0] is None or top_window[1] is None:
        top_window = _voi_lut_window(ds)
    top_slope = _float(ds.get("RescaleSlope"))
    top_intercept = _float(ds.get("RescaleIntercept"))

    frames = []
    for f in range(n):
        def grp(seq: str, attr: str, f: int = f) -> Any:
            return _group_value(ds, f, seq, attr) if enhanced else None

        ipp = _vector(grp("PlanePositionSequence", "ImagePositionPatient"), 3)
        iop = _vector(grp("PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        ps = _vector(grp("PixelMeasuresSequence", "PixelSpacing"), 2)
        step = (_float(grp("PixelMeasuresSequence", "SpacingBetweenSlices"))
                or _float(grp("PixelMeasuresSequence", "SliceThickness")))
        slope = _float(grp("PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _float(grp("PixelValueTransformationSequence", "RescaleIntercept"))
        wc = _float(grp("FrameVOILUTSequence", "WindowCenter"))
        ww = _float(grp("FrameVOILUTSequence", "WindowWidth"))
        iop = iop if iop is not None else top_iop
        step = step or top_step
        if ipp is None and top_ipp is not None:
            # Classic multi-frame with one position (e.g. NM reconstructions): frames
            # are consecutive slices along the normal, SpacingBetweenSlices apart.
            ipp = top_ipp if f == 0 or iop is None else top_ipp + f * (step or 1.0) * slice_normal(iop)
        frames.append(_Frame(
            src=src, index=f, instance=instance, ipp=ipp, iop=iop,
            pixel_spacing=ps if ps is not None else top_ps, slice_step=step,
            slope=slope if slope is not None else (top_slope if top_slope is not None else 1.0),
            intercept=intercept if intercept is not None else (top_intercept or 0.0),
            window=(wc, ww) if wc is not None and ww is not None else top_window,
        ))
    return frames


# --------------------------------------------------------------------------- assembling a volume

@dataclass
class _Pixels:
    """How raw frames of one data set become output values."""

    lut: bool  # Modality LUT Sequence present
    mono1: bool
    palette: bool
    bits_stored: int
    signed: bool
    lut_depth: int = 16

    @classmethod
    def of(cls, ds: Dataset) -> "_Pixels":
        lut_seq = ds.get("ModalityLUTSequence")
        depth = int(lut_seq[0].LUTDescriptor[2]) if lut_seq and "LUTDescriptor" in lut_seq[0] else 16
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        bits_alloc = int(ds.get("BitsAllocated", 16) or 16)
        return cls(lut=bool(lut_seq), mono1=photometric == "MONOCHROME1",
                   palette=photometric == "PALETTE COLOR", lut_depth=depth,
                   bits_stored=int(ds.get("BitsStored", bits_alloc) or bits_alloc),
                   signed=int(ds.get("PixelRepresentation", 0) or 0) == 1)

    def output_range(self, frame: _Frame) -> tuple[float, float]:
        """Range of the Modality LUT output, the range MONOCHROME1 is inverted within."""
        if self.lut:
            return 0.0, float(2 ** self.lut_depth - 1)
        if self.signed:
            lo, hi = -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        else:
            lo, hi = 0, 2 ** self.bits_stored - 1
        a, b = lo * frame.slope + frame.intercept, hi * frame.slope + frame.intercept
        return min(a, b), max(a, b)


def _needs_float(frames: Sequence[_Frame], pixels: Sequence[_Pixels]) -> bool:
    return any(p.lut for p in pixels) or any(f.slope != 1.0 or f.intercept != 0.0 for f in frames)


def _apply_value_pipeline(raw: np.ndarray, frame: _Frame, ds: Dataset, px: _Pixels,
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
        out = out.astype(np.float32, copy=False)
    if px.mono1:
        lo, hi = px.output_range(frame)
        if out.dtype.kind == "f":
            out = np.asarray(lo + hi - out, dtype=out.dtype)
        else:
            out = (int(lo + hi) - out.astype(np.int64)).astype(out.dtype)
    return out


def _affine(frames: list[_Frame]) -> tuple[np.ndarray, bool]:
    """RAS affine of frames already in slice order, and whether the file gave geometry."""
    first = frames[0]
    ps = first.pixel_spacing if first.pixel_spacing is not None else np.ones(2)
    geometric = all(f.ipp is not None and f.iop is not None for f in frames)
    lps = np.eye(4)
    if geometric:
        row, col = first.iop[:3], first.iop[3:]
        if len(frames) > 1:
            step = (frames[-1].ipp - first.ipp) / (len(frames) - 1)
        else:
            step = slice_normal(first.iop) * (first.slice_step or 1.0)
        lps[:3, 0] = row * ps[1]
        lps[:3, 1] = col * ps[0]
        lps[:3, 2] = step
        lps[:3, 3] = first.ipp
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, True
    # No patient geometry (secondary capture, ultrasound...): identity orientation.
    return np.diag([float(ps[1]), float(ps[0]), float(first.slice_step or 1.0), 1.0]), False


def _order(frames: list[_Frame], name: str) -> tuple[list[int], list[list[int]], dict[str, Any]]:
    """Slice order (indices into ``frames``), duplicate groups and the slice report."""
    geometric = all(f.ipp is not None and f.iop is not None for f in frames)
    if not geometric or len(frames) == 1:
        order = sorted(range(len(frames)), key=lambda i: (frames[i].instance, frames[i].src, frames[i].index))
        report = {"n_slices": len(frames), "spacing": None, "uneven_spacing": False,
                  "max_spacing_deviation": 0.0, "missing_slices": 0, "duplicate_positions": 0,
                  "geometry": geometric}
        if geometric:
            report["spacing"] = frames[0].slice_step
        return order, [], report
    ref = frames[0].iop
    tilted = [f for f in frames if np.max(np.abs(f.iop - ref)) > 1e-3]
    if tilted:
        raise SeriesError(
            name, f"{len(tilted)} of {len(frames)} slices have another orientation than the first "
            "(a localizer or multi-plane series is not one volume)", "pick another series")
    positions = np.stack([f.ipp for f in frames])
    tiebreak = [f.instance * 100000 + f.index for f in frames]
    result = order_slices(positions, slice_normal(ref), tiebreak)
    result.report["geometry"] = True
    return result.order, result.duplicate_groups, result.report


def _assemble(headers: list[Dataset], names: list[str], frames: list[_Frame], where: str,
              load: Callable[[int], np.ndarray], progress: Any = None,
              ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[_Frame]]:
    """Order, decode, de-duplicate and stack frames into an ``[i, j, k(, c)]`` array.

    ``headers[src]`` describes file ``src`` (pixel data not needed) and ``load(src)``
    returns its decoded frames. Files are decoded one after the other: a thread pool
    was measured slower on 2 cores, for uncompressed and for JPEG 2000 series alike
    (the decoders and pydicom's parsing hold the GIL), see benchmarks/bench_io.py.
    """
    shapes = {(int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1)) for ds in headers}
    if len(shapes) > 1:
        raise SeriesError(where, f"slices differ in size {sorted(shapes)}", "pick another series")
    order, dup_groups, report = _order(frames, where)
    pixels = [_Pixels.of(ds) for ds in headers]
    kept = [frames[i] for i in order]
    as_float = _needs_float(kept, [pixels[f.src] for f in kept])
    slot = {id(frames[i]): k for k, i in enumerate(order)}
    dup_of = {id(frames[i]): frames[g[0]] for g in dup_groups for i in g[1:]}
    by_src: dict[int, list[_Frame]] = {}
    for f in frames:
        by_src.setdefault(f.src, []).append(f)

    def work(src: int) -> list[tuple[_Frame, np.ndarray]]:
        raw = load(src)
        wanted = by_src[src]
        if raw.shape[0] < len(wanted):
            raise CorruptFileError(names[src], f"holds {raw.shape[0]} frames, header says {len(wanted)}",
                                   "re-export the file")
        return [(f, _apply_value_pipeline(raw[f.index], f, headers[src], pixels[src], as_float))
                for f in wanted]

    out: np.ndarray | None = None
    dropped: list[tuple[_Frame, np.ndarray]] = []
    for src in sorted(by_src):
        for f, value in work(src):
            if id(f) not in slot:
                dropped.append((f, value))
                continue
            if out is None:
                out = np.empty((len(order), *value.shape), dtype=value.dtype)
            out[slot[id(f)]] = value
        if progress is not None:
            progress.update(1)
    assert out is not None
    differing = sum(not np.array_equal(out[slot[id(dup_of[id(f)])]], value) for f, value in dropped)
    if differing:
        raise SeriesError(
            where, f"{differing} slices share a position with a slice of different content "
            "(several acquisitions, echoes or time points in one series)",
            "export one acquisition per series, or read the files one by one with read_dicom")
    affine, _ = _affine(kept)
    axes = (2, 1, 0, 3) if out.ndim == 4 else (2, 1, 0)
    return out.transpose(axes), affine, report, kept


def _metadata(ds: Dataset, kept: list[_Frame], pixels: _Pixels, n_frames: int) -> dict[str, Any]:
    """The JSON-friendly metadata medtl keeps (never patient identity)."""
    first = kept[0]
    wc, ww = first.window
    if wc is not None and pixels.mono1:
        lo, hi = pixels.output_range(first)
        wc = lo + hi - wc  # the window was given for the un-inverted values
    sop = _sop_class(ds)
    meta: dict[str, Any] = {
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "sop_class_uid": sop,
        "sop_class": UID(sop).name if sop else "",
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "transfer_syntax": _ts_name(ds),
        "number_of_frames": n_frames,
        "rescale_slope": first.slope,
        "rescale_intercept": first.intercept,
        "rescale_varies": len({(f.slope, f.intercept) for f in kept}) > 1,
        "bits_stored": pixels.bits_stored,
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "window_center": wc,
        "window_width": ww,
    }
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if photometric:
        meta["photometric_original"] = photometric
    return meta


def _scan(headers: list[Dataset], names: list[str], frames: list[_Frame], where: str,
          load: Callable[[int], np.ndarray], progress: Any = None) -> Scan:
    array, affine, report, kept = _assemble(headers, names, frames, where, load, progress)
    ds = headers[kept[0].src]
    meta = _metadata(ds, kept, _Pixels.of(ds), len(kept))
    meta["slice_report"] = report
    return Scan(array=array, affine=affine, modality=str(ds.get("Modality", "") or "OT"),
                photometric="RGB" if array.ndim == 4 else "MONOCHROME2", format="dicom",
                source=where, metadata=meta)


# --------------------------------------------------------------------------- public: one file

def _check_readable_image(full: Dataset, src: str | BinaryIO, name: str) -> None:
    """Refuse non-image objects (before decoding) and data sets that lost their pixels."""
    if _has_pixels(full) and "Rows" in full:
        _raise_if_not_image(full, name)
        return
    # pydicom silently returns an empty data set when a sequence runs past the end
    # of the file: read the header alone to tell a cut-short file from a non-image.
    if isinstance(src, io.BytesIO):
        src.seek(0)
    header = _read_header(src, name)
    if header is not None and len(header) > len(full):
        _raise_if_not_image(header, name)
        raise CorruptFileError(name, "pixel data is missing or cut short (truncated file)",
                               "re-export or re-download the file")
    _raise_if_not_image(full, name)
    sop = _sop_class(full)
    if sop and UID(sop).name.endswith("Image Storage"):
        raise CorruptFileError(name, f"{UID(sop).name} object without pixel data (truncated file?)",
                               "re-export or re-download the file")
    raise NotAnImageError(name, "DICOM object without pixel data holds no image to classify",
                          _FIX_REFERENCED)


def read_dicom(path: PathLike) -> Scan:
    """Read one DICOM file (single or multi-frame) into a :class:`Scan`.

    Enhanced multi-frame files use per-frame Plane Position / Plane Orientation /
    Pixel Measures / Pixel Value Transformation / Frame VOI LUT items (shared
    groups as fallback) and have their frames ordered along the slice normal.
    Raises :class:`UnsupportedFormatError` (not DICOM), :class:`NotAnImageError`
    (SEG, RT, SR, ...), :class:`CorruptFileError` (truncated, undecodable) or
    :class:`SeriesError` (frames that do not form one volume).
    """
    name = str(path)
    if os.path.isdir(name):
        raise UnsupportedFormatError(name, "is a folder, not a DICOM file", "use read_series for a folder")
    if not os.path.isfile(name):
        raise UnsupportedFormatError(name, "no such file", "check the path")
    if not is_dicom_file(name):
        raise UnsupportedFormatError(name, "not a DICOM file (no DICM marker and no DICOM header)",
                                     "check the file; medtl reads DICOM, NIfTI and PNG/JPEG")
    full = _read_full(name, name)
    _check_readable_image(full, name, name)
    frames = _frames_of(full, 0)
    scan = _scan([full], [name], frames, name, load=lambda _: _decode(full, name))
    scan.metadata["number_of_frames"] = len(frames)
    return scan


# --------------------------------------------------------------------------- public: series

@dataclass
class _Header:
    entry: Entry
    ds: Dataset
    non_image: str | None


@dataclass
class _SeriesInfo:
    uid: str
    headers: list[_Header]

    @property
    def image_headers(self) -> list[_Header]:
        return [h for h in self.headers if h.non_image is None]

    def describe(self, index: int) -> dict[str, Any]:
        first = (self.image_headers or self.headers)[0].ds
        number = _float(first.get("SeriesNumber"))
        return {
            "index": index,
            "series_uid": self.uid,
            "modality": str(first.get("Modality", "") or ""),
            "description": str(first.get("SeriesDescription", "") or ""),
            "series_number": None if number is None else int(number),
            "n_files": len(self.headers),
            "is_image": bool(self.image_headers),
            "sop_class": UID(_sop_class(first)).name if _sop_class(first) else "",
        }


def _show_progress(progress: bool | None, n: int) -> bool:
    if progress is None:
        return n > 50 and sys.stderr.isatty()
    return bool(progress)


def _tqdm(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=not enabled, leave=False)


def _scan_headers(path: PathLike, progress: bool | None) -> tuple[list[_SeriesInfo], list[str]]:
    """Headers of every DICOM file under ``path``, grouped by series (listing order).

    Returns the series and the names of files marked DICOM whose header is
    malformed. Files that are clearly not DICOM (README, thumbnails...) and DICOMDIR
    are skipped silently.
    """
    entries = list_entries(path)
    by_uid: dict[str, list[_Header]] = {}
    unreadable: list[str] = []
    with _tqdm(len(entries), "DICOM headers", _show_progress(progress, len(entries))) as bar, \
            EntrySource() as source:
        for entry in entries:
            bar.update(1)
            try:
                ds = _read_header(source(entry), entry.name)
            except CorruptFileError:
                unreadable.append(entry.name)
                continue
            if ds is None:
                continue
            kind = _non_image_kind(ds)
            if kind is not None and kind.startswith("DICOMDIR"):
                continue
            if kind is None and "Rows" not in ds:
                kind = "DICOM object without pixel data"
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            by_uid.setdefault(uid, []).append(_Header(entry, ds, kind))
    if unreadable:
        warnings.warn(f"{path}: skipped {len(unreadable)} DICOM file(s) with a malformed header, "
                      f"e.g. {unreadable[0]}", stacklevel=3)

    def sort_key(item: tuple[str, list[_Header]]) -> tuple[float, str]:
        number = _float(item[1][0].ds.get("SeriesNumber"))
        return (number if number is not None else float("inf"), item[0])

    series = [_SeriesInfo(uid, headers) for uid, headers in sorted(by_uid.items(), key=sort_key)]
    return series, unreadable


def list_series(path: PathLike) -> list[dict[str, Any]]:
    """The series in a folder (recursive) or ``.zip``: one dict per series with
    ``index``, ``series_uid``, ``modality``, ``description``, ``series_number``,
    ``n_files``, ``is_image`` and ``sop_class``, ordered by SeriesNumber then UID."""
    series, _ = _scan_headers(path, progress=False)
    return [s.describe(i) for i, s in enumerate(series)]


def _listing_text(series: list[_SeriesInfo], limit: int = 5) -> str:
    parts = []
    for i, s in enumerate(series[:limit]):
        d = s.describe(i)
        kind = "" if d["is_image"] else ", no image"
        parts.append(f"[{i}] {d['modality'] or '?'} {d['description']!r} {d['n_files']} files{kind} uid={s.uid}")
    if len(series) > limit:
        parts.append(f"... {len(series) - limit} more")
    return "; ".join(parts)


def _pick(series: list[_SeriesInfo], wanted: str | int | None, where: str) -> _SeriesInfo:
    if wanted is None:
        images = [s for s in series if s.image_headers]
        if not images:
            raise SeriesError(where, f"no image series, only {_listing_text(series)}", _FIX_REFERENCED)
        return max(images, key=lambda s: len(s.image_headers))  # max keeps the first of equals
    if isinstance(wanted, str) and wanted.strip().isdigit() and "." not in wanted:
        wanted = int(wanted)
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        if -len(series) <= wanted < len(series):
            return series[wanted]
    else:
        for s in series:
            if s.uid == str(wanted).strip():
                return s
    raise SeriesError(where, f"no series {wanted!r}; found {_listing_text(series)}",
                      "pass series= one of these indices or UIDs")


def read_series(path: PathLike, series: str | int | None = None, progress: bool | None = None) -> Scan:
    """Read one series from a folder (searched recursively) or a ``.zip`` of DICOM files.

    Headers are read first (``stop_before_pixels``) to group files by
    SeriesInstanceUID; only the chosen series is decoded. ``series`` is a
    SeriesInstanceUID or an index into :func:`list_series` (default: the image
    series with most files). Slices are ordered by ImagePositionPatient projected
    on the slice normal, never by InstanceNumber or file name.

    ``metadata["slice_report"]`` gives ``n_slices``, ``spacing`` (median, mm),
    ``uneven_spacing`` + ``max_spacing_deviation``, ``missing_slices`` (gaps, in
    slices) and ``duplicate_positions``. Slices at a position already taken are
    dropped when their pixels are identical (a file copied twice); if their pixels
    differ (several acquisitions or time points in one series) :class:`SeriesError`
    is raised rather than silently picking one. ``progress`` shows tqdm bars on
    stderr (None: when more than 50 files and stderr is a terminal).
    """
    where = str(path)
    found, unreadable = _scan_headers(path, progress)
    if not found:
        extra = f" ({len(unreadable)} files with a malformed DICOM header)" if unreadable else ""
        raise SeriesError(where, f"no DICOM files found{extra}", "point at the folder or zip holding the .dcm files")
    chosen = _pick(found, series, where)
    if not chosen.image_headers:
        h = chosen.headers[0]
        raise NotAnImageError(h.entry.name, f"{h.non_image} holds no image to classify", _FIX_REFERENCED)
    chosen_headers = chosen.image_headers
    headers = [h.ds for h in chosen_headers]
    names = [h.entry.name for h in chosen_headers]
    frames = [f for i, ds in enumerate(headers) for f in _frames_of(ds, i)]

    with EntrySource() as source, \
            _tqdm(len(headers), "DICOM slices", _show_progress(progress, len(headers))) as bar:
        def load(src: int) -> np.ndarray:
            entry = chosen_headers[src].entry
            data = source(entry)
            full = _read_full(data, entry.name)
            _check_readable_image(full, data, entry.name)
            return _decode(full, entry.name)

        scan = _scan(headers, names, frames, where, load, progress=bar)
    report = scan.metadata["slice_report"]
    report["unreadable_files"] = len(unreadable)
    scan.metadata["series_found"] = len(found)
    problems = [f"{report['missing_slices']} missing slices" if report["missing_slices"] else "",
                f"{report['duplicate_positions']} duplicate positions dropped" if report["duplicate_positions"] else "",
                "uneven slice spacing" if report["uneven_spacing"] else ""]
    problems = [p for p in problems if p]
    if problems:
        warnings.warn(f"{where}: series {chosen.uid}: {', '.join(problems)} (see metadata['slice_report'])",
                      stacklevel=2)
    return scan

