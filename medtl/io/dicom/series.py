"""Series choice: group a folder's, zip's or file list's headers by series, pick one, read it.

Headers are read first (no pixels) to group files by SeriesInstanceUID; only the
chosen series is decoded.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medtl.errors import CorruptFileError, NotAnImageError, SeriesError
from medtl.io import limits
from medtl.io.dicom.budget import check_claims
from medtl.io.dicom.frames import frames_of, to_float
from medtl.io.dicom.geometry import slice_problems
from medtl.io.dicom.pixels import decode
from medtl.io.dicom.sniff import check_readable_image, read_full, read_header
from medtl.io.dicom.sop import FIX_REFERENCED, non_image_kind, sop_class_name
from medtl.io.dicom.sources import Entry, EntrySource, SeriesSource, list_entries, source_name
from medtl.io.dicom.volume import build_scan
from medtl.io.guard import guarded
from medtl.io.scan import Scan


@dataclass
class _Header:
    """One file's header; ``non_image`` says why it holds no image (None: it does)."""

    entry: Entry
    ds: Dataset
    non_image: str | None


@dataclass
class _SeriesInfo:
    """The headers of one SeriesInstanceUID, in listing order."""

    uid: str
    headers: list[_Header]

    @property
    def image_headers(self) -> list[_Header]:
        return [h for h in self.headers if h.non_image is None]

    def describe(self, index: int) -> dict[str, Any]:
        first = (self.image_headers or self.headers)[0].ds
        number = to_float(first.get("SeriesNumber"))
        return {
            "index": index,
            "series_uid": self.uid,
            "study_uid": str(first.get("StudyInstanceUID", "") or ""),
            "modality": str(first.get("Modality", "") or ""),
            "description": str(first.get("SeriesDescription", "") or ""),
            "series_number": None if number is None else int(number),
            "n_files": len(self.headers),
            "is_image": bool(self.image_headers),
            "sop_class": sop_class_name(first),
        }


def _show_progress(progress: bool | None, n: int) -> bool:
    if progress is None:
        return n > 50 and sys.stderr.isatty()
    return bool(progress)


def _tqdm(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=not enabled, leave=False)


def _scan_headers(path: SeriesSource, where: str, progress: bool | None) -> tuple[list[_SeriesInfo], list[str]]:
    """Headers of every DICOM file of ``path`` (named ``where``), grouped by series (listing order).

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
                ds = read_header(source(entry), entry.name)
            except CorruptFileError:
                unreadable.append(entry.name)
                continue
            if ds is None:
                continue
            kind = non_image_kind(ds)
            if kind is not None and kind.startswith("DICOMDIR"):
                continue
            if kind is None and "Rows" not in ds:
                kind = "DICOM object without pixel data"
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            by_uid.setdefault(uid, []).append(_Header(entry, ds, kind))
    if unreadable:
        warnings.warn(f"{where}: skipped {len(unreadable)} DICOM file(s) with a malformed header, "
                      f"e.g. {unreadable[0]}", stacklevel=3)

    def sort_key(item: tuple[str, list[_Header]]) -> tuple[float, str]:
        number = to_float(item[1][0].ds.get("SeriesNumber"))
        return (number if number is not None else float("inf"), item[0])

    series = [_SeriesInfo(uid, headers) for uid, headers in sorted(by_uid.items(), key=sort_key)]
    return series, unreadable


@guarded
def list_series(path: SeriesSource) -> list[dict[str, Any]]:
    """The series in a folder (recursive), ``.zip`` or list of files: one dict per series with
    ``index``, ``series_uid``, ``study_uid``, ``modality``, ``description``, ``series_number``,
    ``n_files``, ``is_image`` and ``sop_class``, ordered by SeriesNumber then UID."""
    series, _ = _scan_headers(path, source_name(path), progress=False)
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
            raise SeriesError(where, f"no image series, only {_listing_text(series)}", FIX_REFERENCED)
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


@guarded
def read_series(path: SeriesSource, series: str | int | None = None, progress: bool | None = None) -> Scan:
    """Read one series from a folder (searched recursively), a ``.zip`` or a list of DICOM files.

    A list reads exactly like the folder holding just those files; messages and
    ``Scan.source`` name the folder holding them all, and a missing file is an error.

    Headers are read first (``stop_before_pixels``) to group files by
    SeriesInstanceUID; only the chosen series is decoded. ``series`` is a
    SeriesInstanceUID or an index into :func:`list_series` (default: the image
    series with most files). Slices are ordered by ImagePositionPatient projected
    on the slice normal, never by InstanceNumber or file name.

    ``metadata["slice_report"]`` gives ``n_slices``, ``spacing`` (median, mm),
    ``uneven_spacing`` + ``max_spacing_deviation``, ``missing_slices`` (gaps, in
    slices), ``duplicate_positions``, ``max_position_error`` (mm between a slice and where
    the evenly stepping affine puts it) and ``tilt_degrees`` (gantry tilt); each problem is
    also named in one warning. Slices at a position already taken are
    dropped when their pixels are identical (a file copied twice); if their pixels
    differ (several acquisitions or time points in one series) :class:`SeriesError`
    is raised rather than silently picking one. ``progress`` shows tqdm bars on
    stderr (None: when more than 50 files and stderr is a terminal).
    """
    where = source_name(path)
    found, unreadable = _scan_headers(path, where, progress)
    if not found:
        extra = f" ({len(unreadable)} files with a malformed DICOM header)" if unreadable else ""
        raise SeriesError(where, f"no DICOM files found{extra}", "point at the folder or zip holding the .dcm files")
    chosen = _pick(found, series, where)
    if not chosen.image_headers:
        h = chosen.headers[0]
        raise NotAnImageError(h.entry.name, f"{h.non_image} holds no image to classify", FIX_REFERENCED)
    chosen_headers = chosen.image_headers
    headers = [h.ds for h in chosen_headers]
    names = [h.entry.name for h in chosen_headers]
    # Claims first: each file against its size and the limits, then the series as a whole.
    total = sum(check_claims(h.ds, h.entry.name, h.entry.size) for h in chosen_headers)
    limits.check_bytes(where, f"series of {len(headers)} files decodes to", total)
    frames = [f for i, ds in enumerate(headers) for f in frames_of(ds, i, names[i])]
    if frames:
        ds0 = headers[0]
        limits.check_pixels(where, "series claims", frames=len(frames), rows=int(ds0.Rows), cols=int(ds0.Columns),
                            samples=int(ds0.get("SamplesPerPixel", 1) or 1), itemsize=0)

    with EntrySource() as source, \
            _tqdm(len(headers), "DICOM slices", _show_progress(progress, len(headers))) as bar:
        def load(src: int) -> np.ndarray:
            entry = chosen_headers[src].entry
            data = source(entry)
            full = read_full(data, entry.name)
            check_readable_image(full, data, entry.name)
            return decode(full, entry.name)

        scan = build_scan(headers, names, frames, where, load, progress=bar)
    report = scan.metadata["slice_report"]
    report["unreadable_files"] = len(unreadable)
    scan.metadata["series_found"] = len(found)
    problems = slice_problems(report)
    if problems:
        warnings.warn(f"{where}: series {chosen.uid}: {', '.join(problems)} (see metadata['slice_report'])",
                      stacklevel=2)
    return scan
