"""One DICOM file (single or multi-frame) read into a :class:`~medtl.io.scan.Scan`."""

from __future__ import annotations

import os
import warnings

from medtl.errors import UnsupportedFormatError
from medtl.io.dicom.budget import check_claims, pixel_bytes
from medtl.io.dicom.frames import frames_of
from medtl.io.dicom.geometry import slice_problems
from medtl.io.dicom.pixels import decode
from medtl.io.dicom.sniff import PathLike, check_readable_image, is_dicom_file, read_full
from medtl.io.dicom.volume import build_scan
from medtl.io.guard import guarded
from medtl.io.scan import Scan


@guarded
def read_dicom(path: PathLike) -> Scan:
    """Read one DICOM file (single or multi-frame) into a :class:`Scan`.

    Enhanced multi-frame files use per-frame Plane Position / Plane Orientation /
    Pixel Measures / Pixel Value Transformation / Frame VOI LUT items (shared
    groups as fallback) and have their frames ordered along the slice normal.
    Raises :class:`UnsupportedFormatError` (not DICOM), :class:`NotAnImageError`
    (SEG, RT, SR, ...), :class:`CorruptFileError` (truncated, undecodable, a header
    claiming more than the file holds), :class:`~medtl.io.limits.LimitError` (claims
    beyond ``MEDTL_MAX_*``) or :class:`SeriesError` (frames that do not form one volume).
    Missing, unevenly spaced or tilted frames are named in one warning, as by ``read_series``.
    No other exception escapes (see :mod:`medtl.io.guard`).
    """
    name = str(path)
    if os.path.isdir(name):
        raise UnsupportedFormatError(name, "is a folder, not a DICOM file", "use read_series for a folder")
    if not os.path.isfile(name):
        raise UnsupportedFormatError(name, "no such file", "check the path")
    if not is_dicom_file(name):
        raise UnsupportedFormatError(name, "not a DICOM file (no DICM marker and no DICOM header)",
                                     "check the file; medtl reads DICOM, NIfTI and PNG/JPEG")
    full = read_full(name, name)
    check_readable_image(full, name, name)
    check_claims(full, name, pixel_bytes(full))  # before any per-frame work
    frames = frames_of(full, 0, name)
    scan = build_scan([full], [name], frames, name, load=lambda _: decode(full, name))
    scan.metadata["number_of_frames"] = len(frames)
    problems = slice_problems(scan.metadata["slice_report"])
    if problems:  # a multi-frame volume with gaps or tilt: said as for a series of files
        warnings.warn(f"{name}: {', '.join(problems)} (see metadata['slice_report'])", stacklevel=2)
    return scan
