"""Volume assembly: frames ordered along the slice normal, decoded, checked and stacked.

The array is indexed ``[i, j, k]`` (``[i, j, k, 3]`` for colour): ``i`` along a row
(DICOM column index), ``j`` down a column (DICOM row index), ``k`` over slices sorted
along the normal. ``affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres (DICOM patient
space is LPS, so the x and y rows are negated).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medtl.errors import CorruptFileError, SeriesError
from medtl.io.dicom.frames import Frame
from medtl.io.dicom.geometry import order_slices, slice_normal
from medtl.io.dicom.pixels import Pixels, apply_value_pipeline, needs_float
from medtl.io.dicom.sop import sop_class, sop_class_name, transfer_syntax_name
from medtl.io.scan import Scan


def frames_affine(frames: list[Frame]) -> tuple[np.ndarray, bool]:
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


def order_frames(frames: list[Frame], name: str) -> tuple[list[int], list[list[int]], dict[str, Any]]:
    """Slice order (indices into ``frames``), duplicate groups and the slice report."""
    has_geometry = [f.ipp is not None and f.iop is not None for f in frames]
    geometric = all(has_geometry)
    if any(has_geometry) and not geometric:
        # Ordering the rest by InstanceNumber with an identity affine would hand the network a
        # volume mirrored in x, y and z without a word: refuse instead.
        lacking = has_geometry.count(False)
        raise SeriesError(
            name, f"{lacking} of {len(frames)} slices lack ImagePositionPatient/ImageOrientationPatient, so the "
            "slice order and orientation cannot be trusted; refused rather than guess (a guess can mirror the "
            "volume)", "re-export the series, or remove the slices without position")
    if not geometric and len(frames) > 1:
        warnings.warn(f"{name}: no patient geometry (ImagePositionPatient/ImageOrientationPatient) in any of "
                      f"{len(frames)} slices: ordered by InstanceNumber, orientation unknown (identity affine)",
                      UserWarning, stacklevel=3)
    if not geometric or len(frames) == 1:
        order = sorted(range(len(frames)), key=lambda i: (frames[i].instance, frames[i].src, frames[i].index))
        report = {"n_slices": len(frames), "spacing": None, "uneven_spacing": False,
                  "max_spacing_deviation": 0.0, "missing_slices": 0, "duplicate_positions": 0,
                  "max_position_error": 0.0, "tilt_degrees": 0.0, "geometry": geometric}
        if geometric:
            report["spacing"] = frames[0].slice_step
        return order, [], report
    ref = frames[0].iop
    tilted = [f for f in frames if np.max(np.abs(f.iop - ref)) > 1e-3]
    if tilted:
        raise SeriesError(
            name, f"{len(tilted)} of {len(frames)} slices have another orientation than the first "
            "(a localizer or multi-plane series is not one volume)", "pick another series")
    spacings = [f.pixel_spacing for f in frames if f.pixel_spacing is not None]
    other = [s for s in spacings if np.max(np.abs(s - spacings[0])) > 1e-3 * np.max(spacings[0])]
    if other:  # one volume has one pixel size; the first slice's would be wrong for the others
        shown = lambda s: "x".join(f"{v:g}" for v in s)  # noqa: E731
        raise SeriesError(
            name, f"{len(other)} of {len(frames)} slices have another PixelSpacing than the first "
            f"({shown(other[0])} against {shown(spacings[0])} mm): not one volume", "pick another series or re-export it")
    positions = np.stack([f.ipp for f in frames])
    tiebreak = [f.instance * 100000 + f.index for f in frames]
    result = order_slices(positions, slice_normal(ref), tiebreak)
    result.report["geometry"] = True
    return result.order, result.duplicate_groups, result.report


def _check_rescale(frames: list[Frame], names: list[str], where: str) -> None:
    """Refuse a rescale that destroys the image: slope 0 (a constant image) or not a finite number."""
    for f in frames:
        if not (np.isfinite(f.slope) and np.isfinite(f.intercept)):
            raise CorruptFileError(names[f.src], f"RescaleSlope/RescaleIntercept {f.slope:g}/{f.intercept:g} is not a "
                                   "finite number", "fix the header or re-export the file")
        if f.slope == 0:
            raise CorruptFileError(names[f.src], "RescaleSlope is 0: every pixel would map to the intercept "
                                   f"{f.intercept:g} (a constant image)", "fix the header or re-export the file")


def _finite(value: np.ndarray, frame: Frame, name: str) -> np.ndarray:
    """Refuse a frame whose values are not all finite (float pixel data with NaN, a rescale overflowing float32)."""
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        raise CorruptFileError(name, f"{bad} pixel value(s) of frame {frame.index} are not finite (NaN or infinite; "
                               f"RescaleSlope {frame.slope:g}, RescaleIntercept {frame.intercept:g})",
                               "fix the header or re-export the file")
    return value


def _assemble(headers: list[Dataset], names: list[str], frames: list[Frame], where: str,
              load: Callable[[int], np.ndarray], progress: Any = None,
              ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[Frame]]:
    """Order, decode, de-duplicate and stack frames into an ``[i, j, k(, c)]`` array.

    ``headers[src]`` describes file ``src`` (pixel data not needed) and ``load(src)``
    returns its decoded frames. Files are decoded one after the other: a thread pool
    was measured slower on 2 cores, for uncompressed and for JPEG 2000 series alike
    (the decoders and pydicom's parsing hold the GIL), see benchmarks/bench_io.py.
    """
    shapes = {(int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1)) for ds in headers}
    if len(shapes) > 1:
        raise SeriesError(where, f"slices differ in size {sorted(shapes)}", "pick another series")
    order, dup_groups, report = order_frames(frames, where)
    pixels = [Pixels.of(ds) for ds in headers]
    kept = [frames[i] for i in order]
    _check_rescale(kept, names, where)
    as_float = needs_float(kept, [pixels[f.src] for f in kept])
    slot = {id(frames[i]): k for k, i in enumerate(order)}
    dup_of = {id(frames[i]): frames[g[0]] for g in dup_groups for i in g[1:]}
    by_src: dict[int, list[Frame]] = {}
    for f in frames:
        by_src.setdefault(f.src, []).append(f)

    def work(src: int) -> list[tuple[Frame, np.ndarray]]:
        raw = load(src)
        wanted = by_src[src]
        if raw.shape[0] < len(wanted):
            raise CorruptFileError(names[src], f"holds {raw.shape[0]} frames, header says {len(wanted)}",
                                   "re-export the file")
        return [(f, _finite(apply_value_pipeline(raw[f.index], f, headers[src], pixels[src], as_float),
                            f, names[src])) for f in wanted]

    out: np.ndarray | None = None
    dropped: list[tuple[Frame, np.ndarray]] = []
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
    affine, _ = frames_affine(kept)
    axes = (2, 1, 0, 3) if out.ndim == 4 else (2, 1, 0)
    return out.transpose(axes), affine, report, kept


def _metadata(ds: Dataset, kept: list[Frame], pixels: Pixels, n_frames: int) -> dict[str, Any]:
    """The JSON-friendly metadata medtl keeps (never patient identity)."""
    first = kept[0]
    wc, ww = first.window
    if wc is not None and pixels.mono1:
        lo, hi = pixels.output_range(first)
        wc = lo + hi - wc  # the window was given for the un-inverted values
    meta: dict[str, Any] = {
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "sop_class_uid": sop_class(ds),
        "sop_class": sop_class_name(ds),
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "transfer_syntax": transfer_syntax_name(ds),
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


def build_scan(headers: list[Dataset], names: list[str], frames: list[Frame], where: str,
               load: Callable[[int], np.ndarray], progress: Any = None) -> Scan:
    """The :class:`Scan` of ``frames`` (see :func:`_assemble`), with metadata and the slice report."""
    array, affine, report, kept = _assemble(headers, names, frames, where, load, progress)
    ds = headers[kept[0].src]
    meta = _metadata(ds, kept, Pixels.of(ds), len(kept))
    meta["slice_report"] = report
    first = kept[0]
    meta["spacing_known"] = first.pixel_spacing is not None
    # Without ImagePositionPatient/ImageOrientationPatient the affine is an assumed identity: say so, so that
    # a viewer shows the frames as stored instead of "reorienting" them by a guess.
    meta["orientation_known"] = all(f.ipp is not None and f.iop is not None for f in kept)
    patient_orientation = [str(v).upper() for v in (ds.get("PatientOrientation") or [])]
    if not meta["orientation_known"] and len(patient_orientation) == 2 and all(patient_orientation):
        meta["patient_orientation"] = patient_orientation  # e.g. ["L", "F"]: rows run to the left, columns to the feet
    if first.pixel_spacing is None:
        problem = first.extra.get("spacing_problem")
        meta["spacing_note"] = (f"{problem}: pixel size unknown, 1 mm assumed" if problem
                                else "no PixelSpacing: pixel size unknown, 1 mm assumed")
        if problem or report.get("geometry"):
            warnings.warn(f"{where}: {meta['spacing_note']}", UserWarning, stacklevel=3)
    return Scan(array=array, affine=affine, modality=str(ds.get("Modality", "") or "OT"),
                photometric="RGB" if array.ndim == 4 else "MONOCHROME2", format="dicom",
                source=where, metadata=meta)
