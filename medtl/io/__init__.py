"""Scan I/O: DICOM (files, multi-frame, series folders and zips), NIfTI, PNG/JPEG/TIFF.

``load_scan`` is the one door: it recognises the format from the content and
returns a :class:`Scan` with voxels, RAS+ affine and metadata.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from medtl.errors import ScanError, UnsupportedFormatError
from medtl.io.detect import detect_format, special_file
from medtl.io.guard import guarded
from medtl.io.nifti import read_nifti, save_nifti
from medtl.io.scan import Scan

__all__ = ["Scan", "load_scan", "save_nifti", "detect_format", "list_series"]


@guarded
def load_scan(path: str | os.PathLike, series: str | int | None = None, grayscale: bool = False,
              progress: bool | None = None) -> Scan:
    """Load any supported scan.

    ``path`` may be a DICOM file, a folder or ``.zip`` of DICOM files (``series``
    picks a SeriesInstanceUID or index; default the largest image series), a
    NIfTI file or a 2D image. ``grayscale=True`` converts colour to luminance.

    Only medtl's own errors (:class:`~medtl.errors.ScanError` and subclasses) leave it:
    claims beyond the budgets of :mod:`medtl.io.limits` are refused before allocation, and
    any exception of a third-party reader becomes a ``ScanError`` naming the file.
    """
    if not isinstance(path, (str, os.PathLike)):  # not "unreadable ... the file is damaged"
        raise ScanError(None, f"a scan is given by its path, got {type(path).__name__}",
                        "pass the file or folder as a str or pathlib.Path")
    if not os.fspath(path):  # Path("") is the current folder: an unset variable read whatever lay there
        raise ScanError(None, "the scan path is empty", "give the path of a scan file or folder")
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "no such file or folder", "check the path")
    special = special_file(path)
    if special:
        raise UnsupportedFormatError(path, f"{special}, not a file", "give the path of a scan file or folder")
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            open(path, "rb").close()
    except PermissionError:
        raise ScanError(path, "permission denied", "make it readable for this user (chmod / chown)") from None
    kind = detect_format(path)
    if kind in ("folder", "zip"):
        from medtl.io.dicom import read_series

        scan = read_series(path, series=series, progress=progress)
    elif kind == "dicom":
        from medtl.io.dicom import read_dicom

        scan = read_dicom(path)
    elif kind == "nifti":
        scan = read_nifti(path)
    elif kind == "image":
        from medtl.io.image2d import read_image

        scan = read_image(path)
    else:
        if path.stat().st_size == 0:
            raise UnsupportedFormatError(path, "file is empty", "re-copy or re-export it")
        raise UnsupportedFormatError(
            path, "not a DICOM, NIfTI, PNG, JPEG or TIFF file (content not recognised)",
            "check the file; supported: .dcm/DICOM series folder or .zip, .nii/.nii.gz, .png/.jpg/.tif")
    return scan.to_grayscale() if grayscale else scan


@guarded
def list_series(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict]:
    """The DICOM series found in a folder, zip or list of files (UID, modality, description, file count)."""
    from medtl.io.dicom import list_series as _list_series

    return _list_series(path)
