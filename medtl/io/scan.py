"""The one scan type every medtl loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import nibabel as nib
import numpy as np

from medtl.errors import ScanError

#: Metadata keys that must never be stored on a Scan (patient-identifying).
PHI_KEYS = frozenset(
    {"PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "PatientAddress",
     "AccessionNumber", "InstitutionName", "ReferringPhysicianName"}
)


def affine_is_usable(affine: np.ndarray) -> bool:
    """Whether a voxel-to-world ``affine`` gives a voxel size and an orientation: finite, with
    axes that are neither zero nor (nearly) parallel."""
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    if not np.all(np.isfinite(affine)):
        return False
    sv = np.linalg.svd(m, compute_uv=False)
    return bool(sv[0] > 0 and sv[-1] > 1e-6 * sv[0])


def count_non_finite(array: np.ndarray) -> int:
    """How many values of ``array`` are NaN or infinite (0 for integer arrays, without a pass)."""
    if array.dtype.kind not in "fc":
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


@dataclass
class Scan:
    """Voxels with their geometry and provenance.

    ``array`` is indexed ``[i, j, k]`` (optionally ``[i, j, k, c]`` for colour),
    the NIfTI/MONAI convention: ``i`` runs along a row (DICOM column index),
    ``j`` down the columns, ``k`` over slices. ``affine`` maps ``(i, j, k, 1)`` to
    RAS+ world coordinates in millimetres. A 2D image is a scan with one slice.

    ``metadata`` is a small JSON-friendly dict (window, series UID, slice report,
    ...); it never holds patient names or IDs.
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = "OT"
    photometric: str = "MONOCHROME2"
    format: str = "unknown"
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim == 2:
            self.array = self.array[:, :, None]
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Scan array must be 2D, 3D or 3D+channels, got shape {self.array.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if not affine_is_usable(self.affine):
            raise ValueError("affine must be finite with three independent axes (no voxel size or orientation "
                             f"otherwise), got {self.affine[:3].tolist()}")
        leaked = PHI_KEYS.intersection(self.metadata)
        if leaked:
            raise ValueError(f"metadata must not hold patient identifiers: {sorted(leaked)}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``(I, J, K)``."""
        return tuple(int(s) for s in self.array.shape[:3])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> str:
        """Orientation code of the voxel axes, e.g. ``"RAS"`` or ``"LPS"``."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def is_2d(self) -> bool:
        return self.shape[2] == 1

    @property
    def is_color(self) -> bool:
        return self.array.ndim == 4

    @property
    def default_window(self) -> tuple[float, float] | None:
        """``(center, width)`` from the file (DICOM WindowCenter/Width), if any."""
        c, w = self.metadata.get("window_center"), self.metadata.get("window_width")
        if c is None or w is None:
            return None
        return float(c), float(w)

    def with_array(self, array: np.ndarray, **changes: Any) -> "Scan":
        """A copy with new voxels (same geometry unless ``affine=`` is given)."""
        return replace(self, array=array, metadata=dict(self.metadata), **changes)

    def to_grayscale(self) -> "Scan":
        """Luminance (ITU-R BT.601) of a colour scan; gray scans are returned unchanged.

        Only RGB(A) has a luminance: other channel counts (a 4D NIfTI's volumes over time or
        b-values) are a :class:`~medtl.errors.ScanError`, not a weighted mix of unrelated volumes."""
        if not self.is_color:
            return self
        if self.array.shape[3] not in (3, 4):
            raise ScanError(self.source, f"{self.array.shape[3]} values per voxel (a 4D file's volumes?), which is "
                            "neither gray nor RGB", "give one volume (e.g. split a 4D NIfTI with nibabel or fslsplit)")
        rgb = self.array[..., :3].astype(np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return self.with_array(gray, photometric="MONOCHROME2")

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (what ``medtl info`` prints)."""
        out: dict[str, Any] = {
            "source": self.source,
            "format": self.format,
            "modality": self.modality,
            "shape": list(self.shape),
            "channels": int(self.array.shape[3]) if self.is_color else 1,
            "dtype": str(self.array.dtype),
            "spacing": [round(s, 6) for s in self.spacing],
            "orientation": self.orientation,
            "photometric": self.photometric,
            "default_window": list(self.default_window) if self.default_window else None,
            "intensity_range": [float(np.min(self.array)), float(np.max(self.array))],
        }
        if self.metadata.get("spacing_known") is False:
            # The affine needs a number (1 mm is assumed), but the file gave none: say so.
            out["spacing_known"] = False
            out["spacing_note"] = self.metadata.get("spacing_note", "pixel size unknown, 1 mm assumed")
        if self.metadata.get("orientation_known") is False:
            out["orientation_known"] = False  # the orientation codes above come from an assumed identity affine
        for key in ("series_uid", "series_description", "slice_report", "transfer_syntax",
                    "number_of_frames", "series_found"):
            if key in self.metadata:
                out[key] = self.metadata[key]
        return out
