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

from medtl.errors import ArgumentError, ArgumentIndexError
from medtl._fileutil import atomic_path
from medtl.io import save_nifti
from medtl.io.scan import Scan
from medtl.transforms.intensity import window_to_unit

PLANES = ("axial", "coronal", "sagittal")
#: Voxel axis order that :func:`display_slice` shows in the radiological convention (DICOM patient axes).
DISPLAY_AXCODES = ("L", "P", "S")


def _check_plane(plane: str) -> None:
    if plane not in PLANES:
        raise ArgumentError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")


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
        raise ArgumentError(f"expected an [i, j, k] or [i, j, k, c] array, got shape {a.shape}")
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    n = a.shape[axis]
    if not -n <= index < n:
        raise ArgumentIndexError(f"{plane} slice {index} is outside 0..{n - 1}")
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


def overlay_view(scan: Scan, saliency: Scan) -> tuple[Scan, Scan, int]:
    """``(image, map, axial index)`` as a one-picture overlay shows a scan: gray, a 3D scan in display
    orientation (as stored when its file gave no orientation, as the app shows it), and for 3D the
    axial slice where the map peaks (the middle one when the map is flat): the middle slice of a
    volume often missed what the model looked at."""
    image, sal = scan.to_grayscale(), saliency
    if not scan.is_2d and scan.metadata.get("orientation_known") is not False:
        image, sal = to_display_orientation(image), to_display_orientation(saliency)
    peaks = np.asarray(sal.array, dtype=np.float32).reshape(-1, image.shape[2]).max(axis=0)  # per axial slice
    index = int(np.argmax(peaks)) if peaks.max() > peaks.min() else image.shape[2] // 2
    return image, sal, index


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
        raise ArgumentError(f"image must be (H, W) or (H, W, 3), got shape {img.shape}")
    if sal.shape != img.shape[:2]:
        raise ArgumentError(f"saliency shape {sal.shape} does not match the image {img.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ArgumentError(f"alpha must be in [0, 1], got {alpha}")
    colours = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(sal), 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * rgb + alpha * colours
    return np.round(blended * 255.0).astype(np.uint8)


#: Colour map of saliency overlays: perceptually uniform, dark (low) to light (high), readable in gray print.
SALIENCY_CMAP = "inferno"
#: Saliency below this (of the map's own ``[0, 1]`` range) is not drawn: the scan shows through unchanged.
SALIENCY_THRESHOLD = 0.4
#: Opacity of the drawn part of the map.
SALIENCY_ALPHA = 0.6
#: RGB of the contour line (cyan: not in the inferno map, so it never reads as a saliency level).
CONTOUR_RGB = (0.0, 1.0, 1.0)


def _gray_rgb(image2d: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    img = np.asarray(image2d)
    if img.ndim == 3 and img.shape[2] == 3:
        return window_to_unit(img, window).astype(np.float64)
    if img.ndim == 2:
        return np.repeat(window_to_unit(img, window)[..., None], 3, axis=2).astype(np.float64)
    raise ArgumentError(f"image must be (H, W) or (H, W, 3), got shape {img.shape}")


def contour_mask(saliency2d: np.ndarray, level: float) -> np.ndarray:
    """Boolean ``(H, W)``: the one-pixel inner border of the region where saliency >= ``level``."""
    from scipy import ndimage

    region = np.nan_to_num(np.asarray(saliency2d, dtype=np.float64)) >= level
    return region & ~ndimage.binary_erosion(region, border_value=0)


def heatmap_overlay(image2d: np.ndarray, saliency2d: np.ndarray, window: tuple[float, float] | None = None, *,
                    cmap: str = SALIENCY_CMAP, alpha: float = SALIENCY_ALPHA,
                    threshold: float = SALIENCY_THRESHOLD, contour: float | None = None) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)``: the windowed scan with the saliency drawn only where it is >= ``threshold``.

    Below ``threshold`` the pixel is the windowed gray scan exactly (no full-frame
    wash); at or above, ``(1 - alpha) * gray + alpha * cmap(saliency)``. With
    ``contour`` (a level in ``[0, 1]``), the border of the region >= that level is
    drawn in :data:`CONTOUR_RGB`. ``window`` is the scan's ``(center, width)``
    (:func:`medtl.transforms.intensity.window_to_unit`).
    """
    gray = _gray_rgb(image2d, window)
    sal = np.clip(np.nan_to_num(np.asarray(saliency2d, dtype=np.float64)), 0.0, 1.0)
    if sal.shape != gray.shape[:2]:
        raise ArgumentError(f"saliency shape {sal.shape} does not match the image {gray.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ArgumentError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 <= threshold <= 1.0:
        raise ArgumentError(f"threshold must be in [0, 1], got {threshold}")
    colours = matplotlib.colormaps[cmap](sal)[..., :3]
    shown = (sal >= threshold)[..., None] if threshold > 0 else np.ones(sal.shape + (1,), bool)
    out = np.where(shown, (1.0 - alpha) * gray + alpha * colours, gray)
    if contour is not None:
        out[contour_mask(sal, contour)] = CONTOUR_RGB
    return np.round(out * 255.0).astype(np.uint8)


def labelled_overlay(rgb: np.ndarray, *, method: str, class_name: str, probability: float, model: str,
                     cmap: str = SALIENCY_CMAP, threshold: float = SALIENCY_THRESHOLD,
                     aspect: float = 1.0, dpi: int = 100, warning: str = "") -> np.ndarray:
    """The overlay as a self-describing picture (uint8 RGB): the image, a colour bar, and text lines
    naming the method, the class explained with its probability, and the model; ``warning`` (e.g. an
    out-of-distribution input) is a last line in orange, so the picture never travels without it.

    Rendered with matplotlib (Agg, no display). The colour bar spans the map's
    ``[0, 1]`` and greys out the part below ``threshold`` (not drawn on the image).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ArgumentError(f"expected a uint8 (H, W, 3) RGB array, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[0] * aspect, rgb.shape[1]
    img_w, img_h = 4.2 * w / max(h, w), 4.2 * h / max(h, w)  # inches
    margin, text_h, bar_w, right = 0.15, 0.75, 0.22, 1.0
    fig_w, fig_h = margin + img_w + margin + bar_w + right, margin + img_h + text_h
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((margin / fig_w, margin / fig_h, img_w / fig_w, img_h / fig_h))
    ax.imshow(rgb, aspect=aspect, interpolation="nearest")
    ax.set_axis_off()
    cax = fig.add_axes(((2 * margin + img_w) / fig_w, margin / fig_h, bar_w / fig_w, img_h / fig_h))
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), cax=cax)
    bar.set_label("saliency (relative to this map's maximum)", color="white", fontsize=8)
    bar.ax.tick_params(colors="white", labelsize=7)
    if threshold > 0:
        cax.axhspan(0.0, threshold, color="0.35", alpha=0.85)
        cax.text(0.5, threshold / 2, "not\nshown", ha="center", va="center", color="white", fontsize=6,
                 transform=cax.transAxes)
    lines = [f"{method}", f"{class_name}: p = {probability:.3f}", f"model: {model}"]
    fig.text(margin / fig_w, 1 - 0.08 / fig_h, "\n".join(lines), ha="left", va="top", color="white", fontsize=9)
    if warning:
        fig.text(margin / fig_w, 1 - 0.6 / fig_h, warning, ha="left", va="top", color="orange", fontsize=8,
                 fontweight="bold")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def colour_bar(width: int = 480, height: int = 64, cmap: str = SALIENCY_CMAP, threshold: float = SALIENCY_THRESHOLD,
               dpi: int = 100) -> np.ndarray:
    """A horizontal legend (uint8 RGB ``(height, width, 3)``) for pages that show the overlay:
    the colour map over the map's ``[0, 1]``, the part below ``threshold`` greyed ("not shown")."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    cax = fig.add_axes((0.03, 0.62, 0.94, 0.3))
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), cax=cax,
                       orientation="horizontal")
    bar.set_ticks([0.0, threshold, 1.0], labels=["0", f"{threshold:g}", "1"])
    bar.ax.tick_params(labelsize=7, pad=1)
    bar.set_label("saliency, relative to the map's maximum", fontsize=7, labelpad=1)
    if threshold > 0:
        cax.axvspan(0.0, threshold, color="0.55", alpha=0.9)
        cax.text(threshold / 2, 0.5, "not shown", ha="center", va="center", color="white", fontsize=7)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_overlay_png(path: str | os.PathLike, rgb: np.ndarray, text: dict[str, str] | None = None) -> Path:
    """Write a uint8 RGB ``(H, W, 3)`` picture as PNG, atomically; ``text``: PNG text chunks (tEXt)."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ArgumentError(f"expected a uint8 (H, W, 3) RGB array, got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    info = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_text(str(key), str(value))
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG", pnginfo=info)
    return path


def save_saliency_nifti(scan_map: Scan, path: str | os.PathLike) -> Path:
    """Write a saliency :class:`Scan` as NIfTI with its (the scan's) affine (:func:`medtl.io.save_nifti`)."""
    return save_nifti(scan_map, path)
