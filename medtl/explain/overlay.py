"""Pictures of scans and saliency: display slices, blended overlays, PNG/NIfTI writers.

Display convention (shared with the app's viewer): a scan array is indexed
``[i, j, k]`` as DICOM stores it (``i`` along a row, ``j`` down the rows, ``k``
over slices), and a slice is shown the way a DICOM viewer shows the stored
image -- rows are ``j`` for an axial slice; coronal and sagittal slices have
``k`` running *up* the picture. For a standard axial series (LPS voxel axes:
``i`` -> patient left, ``j`` -> posterior, ``k`` -> superior) this is the
radiological view: patient right on the picture's left, anterior at the top,
head at the top. Scans in other voxel orders (e.g. a RAS NIfTI) are first
brought to that order with :func:`to_display_orientation`.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np

from medtl._fileutil import atomic_path
from medtl.io import save_nifti
from medtl.io.scan import Scan

PLANES = ("axial", "coronal", "sagittal")
#: Voxel axis order that :func:`display_slice` shows in the radiological convention (DICOM patient axes).
DISPLAY_AXCODES = ("L", "P", "S")


def _check_plane(plane: str) -> None:
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")


def display_slice(scan_array: np.ndarray, index: int, plane: str = "axial") -> np.ndarray:
    """Slice ``index`` of an ``[i, j, k]`` (or ``[i, j, k, c]``) array as a picture ``(rows, cols[, c])``.

    - axial (fixed ``k``): ``array[:, :, k].T`` -- rows ``j``, columns ``i``;
    - coronal (fixed ``j``): rows ``k`` from the last slice down, columns ``i``;
    - sagittal (fixed ``i``): rows ``k`` from the last slice down, columns ``j``.

    A view when possible (no copy). Pixel aspect: :func:`display_aspect`.
    """
    _check_plane(plane)
    a = np.asarray(scan_array)
    if a.ndim not in (3, 4):
        raise ValueError(f"expected an [i, j, k] or [i, j, k, c] array, got shape {a.shape}")
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    n = a.shape[axis]
    if not -n <= index < n:
        raise IndexError(f"{plane} slice {index} is outside 0..{n - 1}")
    plate = np.take(a, index, axis=axis)  # 2 spatial axes (+ channels), in [i, j, k] order minus `axis`
    picture = np.swapaxes(plate, 0, 1)  # rows = second remaining axis
    return picture if plane == "axial" else picture[::-1]


def display_aspect(scan: Scan, plane: str = "axial") -> float:
    """Pixel aspect ``row spacing / column spacing`` of :func:`display_slice` pictures (matplotlib ``aspect``)."""
    _check_plane(plane)
    si, sj, sk = scan.spacing
    rows, cols = {"axial": (sj, si), "coronal": (sk, si), "sagittal": (sk, sj)}[plane]
    return float(rows / cols)


def to_display_orientation(scan: Scan) -> Scan:
    """The scan with voxel axes permuted/flipped to LPS (:data:`DISPLAY_AXCODES`), affine updated.

    Same voxels and world positions (nibabel's orientation tools; an oblique scan
    goes to its closest LPS axes), so :func:`display_slice` shows it in the
    radiological convention whatever order the file stored.
    """
    current = nib.orientations.io_orientation(scan.affine)
    change = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(DISPLAY_AXCODES))
    if np.array_equal(change, [[0, 1], [1, 1], [2, 1]]):
        return scan
    array = nib.orientations.apply_orientation(scan.array, change)
    affine = scan.affine @ nib.orientations.inv_ornt_aff(change, scan.shape)
    return scan.with_array(np.ascontiguousarray(array), affine=affine)


def window_to_unit(image: np.ndarray, window: tuple[float, float] | None = None,
                   percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Intensities to float32 ``[0, 1]``: ``window`` = ``(center, width)``, default the percentile range."""
    img = np.asarray(image, dtype=np.float64)
    if window is None:
        finite = img[np.isfinite(img)]
        lo, hi = (np.percentile(finite, percentiles) if finite.size else (0.0, 1.0))
    else:
        center, width = float(window[0]), float(window[1])
        if width <= 0:
            raise ValueError(f"window width must be > 0, got {width}")
        lo, hi = center - width / 2, center + width / 2
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.float32)
    return np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def overlay(image2d: np.ndarray, saliency2d: np.ndarray, window: tuple[float, float] | None = None,
            cmap: str = "jet", alpha: float = 0.4) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)``: the windowed gray image blended with a colour map of the saliency.

    ``image2d`` ``(H, W)`` (or RGB ``(H, W, 3)``) is windowed to ``[0, 1]``
    (:func:`window_to_unit`); ``saliency2d`` ``(H, W)`` in ``[0, 1]`` is coloured
    with the matplotlib colormap ``cmap``; out = ``(1 - alpha) * image + alpha *
    colour``, so ``alpha=0`` gives the gray picture and ``alpha=1`` the map alone.
    """
    img = np.asarray(image2d)
    sal = np.asarray(saliency2d, dtype=np.float64)
    if img.ndim == 3 and img.shape[2] == 3:
        rgb = window_to_unit(img, window)
    elif img.ndim == 2:
        rgb = np.repeat(window_to_unit(img, window)[..., None], 3, axis=2)
    else:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {img.shape}")
    if sal.shape != img.shape[:2]:
        raise ValueError(f"saliency shape {sal.shape} does not match the image {img.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(sal), 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * rgb + alpha * colours
    return np.round(blended * 255.0).astype(np.uint8)


def save_overlay_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write a uint8 RGB ``(H, W, 3)`` picture as PNG, atomically."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return path


def save_saliency_nifti(scan_map: Scan, path: str | os.PathLike) -> Path:
    """Write a saliency :class:`Scan` as NIfTI with its (the scan's) affine (:func:`medtl.io.save_nifti`)."""
    return save_nifti(scan_map, path)
