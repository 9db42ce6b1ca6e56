"""Slice geometry without pydicom: the slice normal, and slices ordered and checked along it.

Written by hand because no library we depend on does it: MONAI's ``PydicomReader``
orders slices by InstanceNumber and checks neither gaps nor duplicates, and pydicom
has no series concept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Relative tolerance (fraction of the median slice spacing) beyond which slice
#: spacing counts as uneven. 5 % tolerates positions written with 0.1 mm rounding
#: on thin slices while still flagging a real change of spacing.
UNEVEN_TOLERANCE = 0.05
#: Two slices whose positions along the normal differ by less than this (mm) are
#: at the same position.
DUPLICATE_TOLERANCE_MM = 1e-3
#: Angle (degrees) between the slice stacking direction and the slice normal beyond which a series
#: counts as acquired with gantry tilt; positions written with 6 decimals stay far below it.
TILT_TOLERANCE_DEG = 0.1


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
    ``duplicate_positions`` (slices at an already taken position). The affine steps evenly
    from the first to the last kept position (see ``frames_affine``): ``max_position_error``
    (mm) is how far a kept slice lies from where that step puts it (non-zero when slices are
    missing or unevenly spaced) and ``tilt_degrees`` the angle between that step and the
    normal (gantry tilt: the affine is sheared, which ITK-based tools cannot represent).
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
        "max_position_error": 0.0,
        "tilt_degrees": 0.0,
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
        kept_positions = positions[kept]
        step = (kept_positions[-1] - kept_positions[0]) / (len(kept) - 1)
        placed = kept_positions[0] + np.arange(len(kept))[:, None] * step
        cos = abs(float(step @ normal)) / float(np.linalg.norm(step) * np.linalg.norm(normal))
        report.update(
            max_position_error=round(float(np.max(np.linalg.norm(kept_positions - placed, axis=1))), 6),
            tilt_degrees=round(float(np.degrees(np.arccos(min(cos, 1.0)))), 6),
        )
    return SliceOrder(order=kept, duplicate_groups=[g for g in groups if len(g) > 1], report=report)


def slice_problems(report: dict[str, Any]) -> list[str]:
    """What a user must know about a slice report, as short phrases for one warning (empty: nothing).

    Missing or unevenly spaced slices come with how far the even grid of the affine puts a slice
    from its real position; gantry tilt with its angle (the affine is then sheared: exact here, but
    a reader that drops the shear, as ITK does, moves slices)."""
    problems = []
    if report.get("missing_slices"):
        problems.append(f"{report['missing_slices']} missing slices")
    if report.get("duplicate_positions"):
        problems.append(f"{report['duplicate_positions']} duplicate positions dropped")
    if report.get("uneven_spacing"):
        problems.append("uneven slice spacing")
    error, spacing = report.get("max_position_error") or 0.0, report.get("spacing") or 0.0
    if error > max(UNEVEN_TOLERANCE * spacing, DUPLICATE_TOLERANCE_MM):
        problems.append(f"the affine spaces the {report['n_slices']} slices evenly, so a slice lies up to "
                        f"{error:.3g} mm from its real position")
    if (report.get("tilt_degrees") or 0.0) > TILT_TOLERANCE_DEG:
        problems.append(f"gantry tilt of {report['tilt_degrees']:.3g} degrees (the affine is sheared: slices are "
                        "placed exactly, but tools that ignore shear, e.g. ITK/SimpleITK, misplace them)")
    return problems
