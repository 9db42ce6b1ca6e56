"""Pieces of DICOM series reading that need no pydicom: where the files come from
(a folder or a zip) and how slices are ordered and checked along the slice normal.

``medtl.io.dicom`` does the DICOM parsing and calls these. They are written by hand
because no library we depend on exposes them: MONAI's ``PydicomReader`` orders slices
by InstanceNumber and checks neither gaps nor duplicates, and pydicom has no series
concept.
"""

from __future__ import annotations

import io
import os
import posixpath
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from medtl.errors import CorruptFileError, SeriesError

#: Relative tolerance (fraction of the median slice spacing) beyond which slice
#: spacing counts as uneven. 5 % tolerates positions written with 0.1 mm rounding
#: on thin slices while still flagging a real change of spacing.
UNEVEN_TOLERANCE = 0.05
#: Two slices whose positions along the normal differ by less than this (mm) are
#: at the same position.
DUPLICATE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Entry:
    """One candidate file: a path on disk, or a member of a zip archive."""

    name: str  # shown in messages: the path, or "archive.zip:member"
    path: str | None = None
    zip_path: str | None = None
    member: str | None = None


def _unsafe_member(name: str) -> bool:
    """True when a zip member name would land outside the extraction folder (zip slip)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return ".." in posixpath.normpath(norm).split("/")


def list_entries(path: str | os.PathLike) -> list[Entry]:
    """All files under a folder (recursive) or in a ``.zip``, in sorted name order.

    Zip members are read in memory (never extracted); a member whose name escapes
    the archive (``../x``, an absolute path) makes the whole archive refused, since
    such archives are crafted or broken.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return [Entry(name=str(f), path=str(f)) for f in files]
    if p.is_file() and zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CorruptFileError(p, f"unreadable zip archive ({exc})", "re-create the archive") from exc
        for info in infos:
            if _unsafe_member(info.filename):
                raise CorruptFileError(
                    p, f"zip member {info.filename!r} escapes the archive folder, refusing the archive",
                    "re-create the zip with relative member paths")
        members = sorted(i.filename for i in infos if not i.is_dir())
        return [Entry(name=f"{p}:{m}", zip_path=str(p), member=m) for m in members]
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
            return io.BytesIO(zf.read(entry.member))  # type: ignore[arg-type]


def slice_normal(iop: np.ndarray) -> np.ndarray:
    """Unit normal of an ImageOrientationPatient: row cosine x column cosine (LPS)."""
    n = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:6], float))
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


@dataclass
class SliceOrder:
    """Result of :func:`order_slices`: sort order, duplicate groups and the report."""

    order: list[int]  # indices into the input, sorted along the normal
    duplicate_groups: list[list[int]]  # input indices sharing a position (first = kept)
    report: dict[str, Any]


def order_slices(positions: np.ndarray, normal: np.ndarray, tiebreak: list[int] | None = None) -> SliceOrder:
    """Sort slices by ``position . normal`` and describe spacing, gaps and duplicates.

    ``positions`` is ``(n, 3)`` ImagePositionPatient values; ``tiebreak`` (e.g.
    InstanceNumber) orders slices at the same position so the kept one is stable.
    The report holds ``n_slices`` (after dropping duplicates), ``spacing`` (median
    distance between consecutive distinct positions, mm), ``uneven_spacing`` and
    ``max_spacing_deviation`` (mm), ``missing_slices`` (a step of at least 1.75x the
    median counts as ``floor(step / median + 0.25) - 1`` missing slices) and
    ``duplicate_positions`` (slices at an already taken position).
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(positions)
    proj = positions @ np.asarray(normal, dtype=np.float64)
    tb = np.arange(n) if tiebreak is None else np.asarray(tiebreak)
    order = list(np.lexsort((np.arange(n), tb, proj)))
    groups: list[list[int]] = []
    for idx in order:
        if groups and abs(proj[idx] - proj[groups[-1][0]]) < DUPLICATE_TOLERANCE_MM:
            groups[-1].append(int(idx))
        else:
            groups.append([int(idx)])
    kept = [g[0] for g in groups]
    diffs = np.diff(proj[kept])
    report: dict[str, Any] = {
        "n_slices": len(kept),
        "spacing": None,
        "uneven_spacing": False,
        "max_spacing_deviation": 0.0,
        "missing_slices": 0,
        "duplicate_positions": int(n - len(kept)),
    }
    if len(diffs):
        med = float(np.median(diffs))
        dev = float(np.max(np.abs(diffs - med)))
        ratios = diffs / med
        # A step of ~2x the median is one missing slice, ~3x two...; 1.5x is only uneven.
        gaps = np.maximum(np.floor(ratios + 0.25) - 1, 0)
        report.update(
            spacing=round(med, 6),
            uneven_spacing=bool(dev > max(UNEVEN_TOLERANCE * med, DUPLICATE_TOLERANCE_MM)),
            max_spacing_deviation=round(dev, 6),
            missing_slices=int(gaps.sum()),
        )
    return SliceOrder(order=kept, duplicate_groups=[g for g in groups if len(g) > 1], report=report)
