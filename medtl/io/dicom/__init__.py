"""DICOM reading: one file (single or multi-frame), or a series in a folder, a zip or a list of files.

Everything returns a :class:`~medtl.io.scan.Scan` in medtl's convention: the array is
indexed ``[i, j, k]`` (``[i, j, k, 3]`` for colour) with ``i`` along a row (DICOM column
index), ``j`` down a column (DICOM row index), ``k`` over slices sorted along the slice
normal, and ``affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres (DICOM patient space
is LPS, so the x and y rows are negated).

Pixel values follow the DICOM pipeline up to the Modality LUT (CT in HU), MONOCHROME1
is inverted, colour is RGB channel-last, and no VOI/window is applied (the file's
window is kept in ``metadata``). Objects that hold no image (SEG, RT, SR, DICOMDIR...)
raise :class:`~medtl.errors.NotAnImageError` before any pixel decoding; damaged files
raise :class:`~medtl.errors.CorruptFileError`.

One module per job: ``sop`` (SOP class / transfer syntax tables), ``sniff`` (is it
DICOM, is it an image), ``frames`` (per-frame attributes), ``pixels`` (the value
pipeline), ``geometry`` and ``volume`` (slice order, spacing report, affine,
stacking), ``sources`` (folder, zip, file list), ``file`` (one file) and ``series``
(grouping and choosing a series).
"""

from __future__ import annotations

from medtl.io.dicom.file import read_dicom
from medtl.io.dicom.series import list_series, read_series
from medtl.io.dicom.sniff import is_dicom_file

__all__ = ["read_dicom", "read_series", "list_series", "is_dicom_file"]
