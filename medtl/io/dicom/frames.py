"""Per-frame attributes: what each 2D frame's position, orientation, spacing and rescale are.

Classic files carry them at the top level; enhanced multi-frame files carry them in
functional groups (per-frame items first, shared items as fallback). Both become
one :class:`Frame` per frame, so ordering and the pixel pipeline see one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medtl.io.dicom.geometry import slice_normal


def to_float(value: Any) -> float | None:
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


def to_vector(value: Any, n: int) -> np.ndarray | None:
    """A multi-valued element as an ``(n,)`` float array, or None when absent, short or not finite."""
    if value is None:
        return None
    try:
        vec = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return vec if vec.shape == (n,) and np.all(np.isfinite(vec)) else None


@dataclass
class Frame:
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


def rescale_value(value: Any) -> float | None:
    """A rescale slope/intercept: None when absent, NaN when present but not a finite number
    (so that the pixel pipeline refuses it instead of silently using 1.0 / 0.0)."""
    if value is None or value == "":
        return None
    out = to_float(value)
    return float("nan") if out is None else out


def spacing_value(value: Any) -> tuple[np.ndarray | None, str | None]:
    """A PixelSpacing as ``(row, column)`` mm, or ``(None, why)`` when missing or not positive."""
    if value is None or value == "":
        return None, None
    vec = to_vector(value, 2)
    if vec is None or np.any(vec < 1e-6) or np.any(vec > 1e4):  # 1 nm to 10 m, as _positive
        shown = "\\".join(str(v) for v in value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) \
            else str(value)
        return None, f"invalid PixelSpacing {shown[:40]!r} (must be two positive numbers of mm)"
    return vec, None


#: How far ImageOrientationPatient's direction cosines may be from unit length and orthogonal
#: (scanners write about 6 decimals); within it they are renormalised, beyond it refused.
IOP_TOLERANCE = 1e-2


def orientation_value(value: Any, name: str | None = None) -> np.ndarray | None:
    """An ImageOrientationPatient as two orthonormal direction cosines (None when absent or not
    six finite numbers). Refused when they are not unit vectors at right angles: scaled ones
    would silently scale the voxel size, parallel ones leave no slice normal."""
    vec = to_vector(value, 6)
    if vec is None:
        return None
    row, col = vec[:3], vec[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if abs(nr - 1) > IOP_TOLERANCE or abs(nc - 1) > IOP_TOLERANCE or abs(float(row @ col)) > IOP_TOLERANCE:
        from medtl.errors import CorruptFileError

        shown = "\\".join(f"{v:g}" for v in vec)
        raise CorruptFileError(name, f"invalid ImageOrientationPatient '{shown}' (the row and column direction "
                               "cosines must be unit vectors at right angles)", "re-export the file")
    return np.concatenate([row / nr, col / nc])


def _positive(value: float | None) -> float | None:
    """A slice step in mm, or None when missing or outside 1 nm to 10 m (no slice is that thin or thick)."""
    return value if value is not None and 1e-6 <= value <= 1e4 else None


def frames_of(ds: Dataset, src: int, name: str | None = None) -> list[Frame]:
    """One :class:`Frame` per frame of ``ds``; functional groups win over top-level attributes.

    Callers check the header's claims first (:func:`medtl.io.dicom.budget.check_claims`);
    a frame count beyond ``MEDTL_MAX_FRAMES`` is refused here too. A PixelSpacing that is
    not two positive numbers (1 nm to 10 m) counts as missing (``extra["spacing_problem"]`` says why);
    an ImageOrientationPatient that is not two orthonormal vectors is refused (naming ``name``);
    SliceThickness/SpacingBetweenSlices that are not positive count as missing; a rescale
    slope or intercept that is present but not a finite number becomes NaN (refused later).
    """
    from medtl.io import limits

    n = int(to_float(ds.get("NumberOfFrames")) or 1)
    if n < 1 or n > limits.current().max_frames:
        from medtl.errors import CorruptFileError

        raise CorruptFileError(name, f"header claims NumberOfFrames = {n}", "re-export the file")
    instance = int(to_float(ds.get("InstanceNumber")) or 0)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    top_ipp = to_vector(ds.get("ImagePositionPatient"), 3)
    top_iop = orientation_value(ds.get("ImageOrientationPatient"), name)
    top_ps, top_problem = spacing_value(ds.get("PixelSpacing"))
    if top_ps is None:
        top_ps, imager_problem = spacing_value(ds.get("ImagerPixelSpacing"))
        top_problem = top_problem or imager_problem
    top_step = _positive(to_float(ds.get("SpacingBetweenSlices"))) or _positive(to_float(ds.get("SliceThickness")))
    top_window = (to_float(ds.get("WindowCenter")), to_float(ds.get("WindowWidth")))
    if top_window[0] is None or top_window[1] is None:
        top_window = _voi_lut_window(ds)
    top_slope = rescale_value(ds.get("RescaleSlope"))
    top_intercept = rescale_value(ds.get("RescaleIntercept"))

    frames = []
    for f in range(n):
        def grp(seq: str, attr: str, f: int = f) -> Any:
            return _group_value(ds, f, seq, attr) if enhanced else None

        ipp = to_vector(grp("PlanePositionSequence", "ImagePositionPatient"), 3)
        iop = orientation_value(grp("PlaneOrientationSequence", "ImageOrientationPatient"), name)
        ps, problem = spacing_value(grp("PixelMeasuresSequence", "PixelSpacing"))
        step = (_positive(to_float(grp("PixelMeasuresSequence", "SpacingBetweenSlices")))
                or _positive(to_float(grp("PixelMeasuresSequence", "SliceThickness"))))
        slope = rescale_value(grp("PixelValueTransformationSequence", "RescaleSlope"))
        intercept = rescale_value(grp("PixelValueTransformationSequence", "RescaleIntercept"))
        wc = to_float(grp("FrameVOILUTSequence", "WindowCenter"))
        ww = to_float(grp("FrameVOILUTSequence", "WindowWidth"))
        iop = iop if iop is not None else top_iop
        step = step or top_step
        if ipp is None and top_ipp is not None:
            # Classic multi-frame with one position (e.g. NM reconstructions): frames
            # are consecutive slices along the normal, SpacingBetweenSlices apart.
            ipp = top_ipp if f == 0 or iop is None else top_ipp + f * (step or 1.0) * slice_normal(iop)
        frames.append(Frame(
            src=src, index=f, instance=instance, ipp=ipp, iop=iop,
            pixel_spacing=ps if ps is not None else top_ps, slice_step=step,
            slope=slope if slope is not None else (top_slope if top_slope is not None else 1.0),
            intercept=intercept if intercept is not None else (top_intercept or 0.0),
            window=(wc, ww) if wc is not None and ww is not None else top_window,
            extra={"spacing_problem": problem or top_problem} if (ps is None and top_ps is None
                                                                  and (problem or top_problem)) else {},
        ))
    return frames
