"""Viewer logic of the medtl app: planes, slices drawn with their true aspect ratio,
window/level presets and saliency overlays.

Pure numpy functions (no Gradio), so every rule here is tested without a browser.
Slicing, orientation and blending are ``medtl.explain``'s (one display convention
for the CLI's PNGs and the app): a volume is reoriented to L, P, S voxel axes
(:func:`medtl.explain.to_display_orientation`) and sliced radiologically
(:func:`medtl.explain.display_slice`: axial with anterior at the top and the
patient's right on the left; coronal and sagittal with the head at the top).
A 2D image (one slice: a DICOM slice, an X-ray, a PNG) is shown exactly as
stored, never reoriented. A saliency map shares the scan's grid and affine, so
it goes through the same steps and lands on the same pixels.

What this module adds for a screen: slices are resampled to square pixels (a
5 mm slice stack is not squashed next to 0.7 mm in-plane pixels) and small
images are enlarged by an integer factor to at least :data:`MIN_DISPLAY_SIDE`
pixels on the long side; CT window presets, the file's window and an automatic
one; ranges for the level/width sliders.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from skimage.transform import resize

from medtl.explain import (
    PLANES,
    SALIENCY_ALPHA,
    SALIENCY_CMAP,
    SALIENCY_THRESHOLD,
    display_aspect,
    display_slice,
    heatmap_overlay,
    labelled_overlay,
    to_display_orientation,
)
from medtl.io.scan import Scan
from medtl.transforms.intensity import CT_WINDOWS, window_to_unit

__all__ = [
    "AUTO_WINDOW", "CT_PRESETS", "FILE_WINDOW", "MAX_DISPLAY_SIDE", "MIN_DISPLAY_SIDE", "PLANES", "apply_window", "auto_window",
    "color_window", "default_preset", "display_size", "for_display", "labelled", "looks_like_ct", "n_slices",
    "planes", "preset_window", "render", "scan_facts", "slider_ranges", "window_choices",
]

#: CT window presets, display name -> (center = level, width) in HU (the same table preprocessing uses).
CT_PRESETS: dict[str, tuple[float, float]] = {
    name.replace("_", " ").capitalize(): CT_WINDOWS[name] for name in ("soft_tissue", "lung", "bone", "brain", "liver")
}
#: The file's own WindowCenter/WindowWidth (DICOM), offered when present.
FILE_WINDOW = "File default"
#: Percentile window for MR, X-ray, ultrasound and anything without HU.
AUTO_WINDOW = "Auto"
AUTO_PERCENTILES = (0.5, 99.5)
#: Voxels looked at to pick an automatic window (a regular subsample of bigger volumes).
_AUTO_SAMPLE = 1_000_000
#: Long side, in pixels, that a displayed slice is enlarged to at least.
MIN_DISPLAY_SIDE = 384
#: Long side a picture is shrunk to, at most, for the viewer and its download (about twice the viewer's height).
MAX_DISPLAY_SIDE = 1024
#: A scan with no modality whose values go this low is taken to be in Hounsfield units
#: (air is -1000 HU; no MR, PET or image intensity is negative that far).
_HU_AIR_BELOW = -500.0


def for_display(scan: Scan, like: Scan | None = None) -> Scan:
    """The scan (or a saliency map on the grid of ``like``, its scan) in display orientation: volumes
    reoriented to L, P, S voxel axes; 2D images, and volumes whose file gave no patient orientation
    (:func:`has_geometry`: reorienting an assumed affine would turn them by a guess), as stored."""
    return scan if scan.is_2d or not has_geometry(like or scan) else to_display_orientation(scan)


def planes(scan: Scan) -> tuple[str, ...]:
    """Planes a scan can be viewed in (a 2D image has only its own)."""
    return PLANES[:1] if scan.is_2d else PLANES


def n_slices(scan: Scan, plane: str) -> int:
    """Number of slices along ``plane``."""
    if plane not in planes(scan):
        raise ValueError(f"no {plane} plane for this scan; choose one of {', '.join(planes(scan))}")
    return int(scan.shape[{"axial": 2, "coronal": 1, "sagittal": 0}[plane]])


def display_size(shape: Sequence[int], aspect: float, min_side: int = MIN_DISPLAY_SIDE,
                 max_side: int = MAX_DISPLAY_SIDE) -> tuple[int, int]:
    """Pixel size ``(rows, cols)`` that shows a ``shape`` picture whose pixels are ``aspect``
    (row spacing / column spacing, :func:`medtl.explain.display_aspect`) with square pixels.

    The finer axis keeps its resolution, the coarser one is stretched to it; then
    both are enlarged by one integer factor until the long side reaches ``min_side``, or
    shrunk until it is at most ``max_side`` (a 4000 x 4000 mammogram redrawn at full size
    took seconds per slider step, for more pixels than a screen shows).
    """
    rows, cols = int(shape[0]), int(shape[1])
    aspect = float(aspect)
    if rows < 1 or cols < 1 or not aspect > 0 or not math.isfinite(aspect):
        raise ValueError(f"cannot display a picture of shape {tuple(shape)} with pixel aspect {aspect}")
    h, w = (rows * aspect, float(cols)) if aspect >= 1 else (float(rows), cols / aspect)
    factor: float = max(1, math.ceil(min_side / max(h, w)))
    if max(h, w) > max_side:
        factor = max_side / max(h, w)
    return max(1, round(h * factor)), max(1, round(w * factor))


def _resample(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a 2D (or 2D + channels) picture to ``size`` (float32); shrunk by
    two or more, it is first averaged over whole blocks (no aliasing, and fast on large images)."""
    img = np.asarray(img, dtype=np.float32)
    if img.shape[:2] == tuple(size):
        return img
    k = min(img.shape[0] // size[0], img.shape[1] // size[1])
    if k >= 2:
        h, w = img.shape[0] // k * k, img.shape[1] // k * k
        img = img[:h, :w].reshape(h // k, k, w // k, k, *img.shape[2:]).mean(axis=(1, 3), dtype=np.float32)
        if img.shape[:2] == tuple(size):
            return img
    return resize(img, tuple(size) + img.shape[2:], order=1, mode="edge", anti_aliasing=False,
                  preserve_range=True).astype(np.float32)


# --- windows -----------------------------------------------------------------------------------

def looks_like_ct(modality: str, array: np.ndarray) -> bool:
    """True for CT, and for a scan of unknown modality (NIfTI, ``OT``) holding Hounsfield
    units (values down at air); CT window presets are offered for these."""
    if modality == "CT":
        return True
    if modality not in ("", "OT") or np.asarray(array).ndim == 4 or np.asarray(array).size == 0:
        return False
    return float(np.nanmin(array)) <= _HU_AIR_BELOW


def window_choices(is_ct: bool, file_window: tuple[float, float] | None) -> list[str]:
    """Preset names to offer: the file's window when present, the CT presets for CT, and Auto."""
    names = [FILE_WINDOW] if file_window else []
    if is_ct:
        names += list(CT_PRESETS)
    return names + [AUTO_WINDOW]


def default_preset(is_ct: bool, file_window: tuple[float, float] | None) -> str:
    """The file's own window when present, else soft tissue for CT, else Auto."""
    if file_window:
        return FILE_WINDOW
    return "Soft tissue" if is_ct else AUTO_WINDOW


def auto_window(array: np.ndarray) -> tuple[float, float]:
    """``(center, width)`` spanning the 0.5-99.5th percentiles of the finite voxels."""
    flat = np.asarray(array).reshape(-1)
    if flat.size > _AUTO_SAMPLE:
        flat = flat[:: flat.size // _AUTO_SAMPLE]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.5, 1.0
    lo, hi = (float(v) for v in np.percentile(flat, AUTO_PERCENTILES))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        hi = lo + 1.0
    return (lo + hi) / 2.0, hi - lo


def preset_window(name: str, array: np.ndarray, file_window: tuple[float, float] | None) -> tuple[float, float]:
    """``(center, width)`` of a preset name (see :func:`window_choices`)."""
    if name == FILE_WINDOW:
        if not file_window:
            raise ValueError("this scan has no window of its own")
        return float(file_window[0]), float(file_window[1])
    if name in CT_PRESETS:
        return CT_PRESETS[name]
    if name == AUTO_WINDOW:
        return auto_window(array)
    raise ValueError(f"unknown window preset {name!r}")


def slider_ranges(array: np.ndarray,
                  windows: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((level_min, level_max), (width_min, width_max))`` for the level/width sliders:
    the data range, widened to hold every offered window."""
    a = np.asarray(array)
    lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size else (0.0, 1.0)
    centers = [c for c, _ in windows] + [lo, hi]
    widths = [w for _, w in windows] + [hi - lo]
    span = max(max(widths), 1.0)
    return (min(centers), max(centers)), (min(1.0, span / 100.0), 2.0 * span)


def apply_window(image: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window: ``center - width/2`` -> 0, ``center + width/2`` -> 255, clipped (uint8)."""
    return np.round(window_to_unit(image, (float(center), max(float(width), 1e-6))) * 255.0).astype(np.uint8)


def color_window(image: np.ndarray) -> tuple[float, float]:
    """The window that shows a colour image unchanged: its dtype's range for 8-bit, else min..max."""
    a = np.asarray(image)
    lo, hi = (0.0, 255.0) if a.dtype == np.uint8 else (float(np.nanmin(a)), float(np.nanmax(a)))
    return (lo + hi) / 2.0, max(hi - lo, 1e-6)


# --- rendering ---------------------------------------------------------------------------------

def render(scan: Scan, plane: str, index: int, window: tuple[float, float] | None,
           saliency: Scan | None = None, alpha: float = SALIENCY_ALPHA, cmap: str = SALIENCY_CMAP,
           min_side: int = MIN_DISPLAY_SIDE, threshold: float = SALIENCY_THRESHOLD,
           contour: float | None = None) -> np.ndarray:
    """One slice of a display-oriented scan (:func:`for_display`) as RGB uint8 with square
    pixels (:func:`display_size`): windowed (gray; a colour image keeps its colours) and,
    with a ``saliency`` map on the same grid (the same slice of the same plane), drawn with
    ``medtl.explain.heatmap_overlay``: ``cmap`` where the map is >= ``threshold``, the
    windowed scan unchanged below it, and an optional ``contour`` line at that level."""
    n = n_slices(scan, plane)
    if not 0 <= int(index) < n:
        raise ValueError(f"{plane} slice {index} is outside 0..{n - 1}")
    img = display_slice(scan.array, int(index), plane)
    size = display_size(img.shape[:2], display_aspect(scan, plane), min_side)
    if scan.is_color:
        img = img[..., :3]
        window = color_window(img)
    elif window is None:
        raise ValueError("a gray image needs a window (center, width)")
    if saliency is None:
        sal, alpha, contour = np.zeros(size, dtype=np.float32), 0.0, None
    else:
        if saliency.shape != scan.shape:
            raise ValueError(f"saliency grid {saliency.shape} differs from the scan's {scan.shape}")
        sal = _resample(display_slice(saliency.array, int(index), plane), size)
    return heatmap_overlay(_resample(img, size), np.clip(sal, 0.0, 1.0), window, cmap=cmap,
                           alpha=float(np.clip(alpha, 0, 1)), threshold=threshold, contour=contour)


def labelled(rgb: np.ndarray, *, method: str, class_name: str, probability: float, model: str,
             plane: str | None = None, index: int | None = None, n: int | None = None,
             cmap: str = SALIENCY_CMAP, threshold: float = SALIENCY_THRESHOLD, warning: str = "") -> np.ndarray:
    """The rendered slice (:func:`render`, square pixels) as the picture to download: colour bar,
    method, class explained with its probability, model, for a volume the plane and slice, and
    ``warning`` (a scan outside the training data) as a last line."""
    where = f" - {plane} slice {index + 1} of {n}" if plane and index is not None and n else ""
    return labelled_overlay(rgb, method=method + where, class_name=class_name, probability=probability, model=model,
                            cmap=cmap, threshold=threshold, warning=warning)


def scan_facts(summary: dict[str, Any], modality: str | None = None) -> list[tuple[str, str]]:
    """Rows ``(name, value)`` describing a scan for people, from ``Scan.summary()`` (``modality``:
    what to show instead of the file's, see :func:`display_modality`). A file without a pixel size
    shows spacing "unknown", never the 1 mm the affine assumes."""
    shape = " × ".join(str(s) for s in summary["shape"])
    if summary.get("channels", 1) > 1:
        shape += f" × {summary['channels']} channels"
    rows = [
        ("Modality", str(modality or summary.get("modality") or "unknown")),
        ("Format", str(summary.get("format", "?"))),
        ("Shape (i × j × k)", shape),
        ("Spacing", " × ".join(f"{s:.3g}" for s in summary["spacing"]) + " mm"
         if summary.get("spacing_known", True) else f"unknown ({summary.get('spacing_note', 'not in the file')})"),
        ("Orientation", str(summary.get("orientation", "?")) if summary.get("orientation_known", True)
         else "unknown (not in the file: shown as stored)"),
    ]
    if summary.get("default_window"):
        c, w = summary["default_window"]
        rows.append(("Window in file", f"level {c:g}, width {w:g}"))
    lo, hi = summary.get("intensity_range", (None, None))
    if lo is not None:
        rows.append(("Intensity range", f"{lo:.6g} to {hi:.6g}"))
    if summary.get("series_description"):
        rows.append(("Series", str(summary["series_description"])))
    return rows


# --- annotations: orientation letters, slice position, scale bar, pointer readout ---------------

#: The patient direction opposite each orientation letter.
OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
#: Scale bar lengths offered, mm (the longest that fits in a quarter of the picture is drawn).
SCALE_BAR_MM = (1, 2, 5, 10, 20, 25, 50, 100, 200, 500)


def has_geometry(scan: Scan) -> bool:
    """Whether the file said which way the patient lies: False for a plain picture (PNG/JPEG/TIFF) and
    for DICOM without ImagePositionPatient/ImageOrientationPatient (ultrasound, secondary capture,
    many radiographs), whose affine is an assumed identity."""
    return scan.format != "image" and scan.metadata.get("orientation_known") is not False


def pixel_size_known(scan: Scan) -> bool:
    """Whether the file gave a pixel size (a plain picture never does): else 1 mm is only assumed, and
    no scale bar or distance is drawn from it."""
    return scan.format != "image" and scan.metadata.get("spacing_known") is not False


def _letter(direction: np.ndarray) -> str:
    """Orientation letter of a RAS+ direction (its dominant axis, as ``nibabel.aff2axcodes``)."""
    axis = int(np.argmax(np.abs(direction)))
    return ("R", "A", "S")[axis] if direction[axis] > 0 else ("L", "P", "I")[axis]


def _picture_axes(plane: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """For :func:`medtl.explain.display_slice`: ``((voxel axis, sign), ...)`` that a step down a
    row and a step right along a column move by."""
    return {"axial": ((1, 1), (0, 1)), "coronal": ((2, -1), (0, 1)), "sagittal": ((2, -1), (1, 1))}[plane]


def orientation_letters(scan: Scan, plane: str) -> dict[str, str] | None:
    """``{"top", "bottom", "left", "right"}`` patient directions at the edges of a displayed slice
    (:func:`render` of a :func:`for_display` scan), from its affine; ``None`` for a plain picture.

    Axial radiological display gives A top, P bottom, R left, L right (the patient's left on
    the image's right); coronal S/I and R/L; sagittal S/I and A/P."""
    if not has_geometry(scan):
        return _letters_of_patient_orientation(scan) if plane == "axial" else None
    (row_axis, row_sign), (col_axis, col_sign) = _picture_axes(plane)
    down = _letter(row_sign * scan.affine[:3, row_axis])
    right = _letter(col_sign * scan.affine[:3, col_axis])
    return {"top": OPPOSITE[down], "bottom": down, "left": OPPOSITE[right], "right": right}


#: PatientOrientation (0020,0020) letters and their opposites (H head, F foot).
_OPPOSITE_PO = {"R": "L", "L": "R", "A": "P", "P": "A", "H": "F", "F": "H"}


def _letters_of_patient_orientation(scan: Scan) -> dict[str, str] | None:
    """Edge letters of a frame shown as stored, from PatientOrientation (a radiograph's ``L\\F``: along a
    row toward the patient's left, down a column toward the feet); ``None`` without it."""
    po = scan.metadata.get("patient_orientation")
    if not po or len(po) != 2 or not all(set(v) <= set(_OPPOSITE_PO) for v in po):
        return None
    right, down = po
    flip = lambda v: "".join(_OPPOSITE_PO[c] for c in v)  # noqa: E731
    return {"top": flip(down), "bottom": down, "left": flip(right), "right": right}


def slice_position(scan: Scan, plane: str, index: int) -> tuple[str, float] | None:
    """``(letter, mm)``: where slice ``index`` of ``plane`` lies along the patient axis it steps
    through (e.g. ``("S", 35.0)`` for an axial slice 35 mm superior of the scanner's origin;
    a negative coordinate is given with the opposite letter). ``None`` without geometry."""
    if not has_geometry(scan) or not pixel_size_known(scan):
        return None
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    centre = (np.asarray(scan.shape, dtype=float) - 1) / 2.0
    centre[axis] = index
    world = scan.affine @ np.append(centre, 1.0)
    step = scan.affine[:3, axis]
    world_axis = int(np.argmax(np.abs(step)))
    value = float(world[world_axis])
    letter = ("R", "A", "S")[world_axis]
    return (letter, value) if value >= 0 else (OPPOSITE[letter], -value)


def display_mm_per_pixel(scan: Scan, plane: str, size: Sequence[int]) -> float | None:
    """Millimetres per pixel of a rendered slice of ``size`` ``(rows, cols)`` (square pixels), or
    ``None`` when the file gave no pixel size."""
    if not pixel_size_known(scan):
        return None
    cols = scan.shape[{"axial": 0, "coronal": 0, "sagittal": 1}[plane]]
    col_mm = scan.spacing[{"axial": 0, "coronal": 0, "sagittal": 1}[plane]]
    return float(col_mm * cols / int(size[1]))


def scale_bar(mm_per_pixel: float, width_px: int, fraction: float = 0.25) -> tuple[float, int] | None:
    """``(length_mm, length_px)``: the longest of :data:`SCALE_BAR_MM` no longer than ``fraction``
    of the picture's width (``None`` if even 1 mm does not fit or the size is unknown)."""
    if not mm_per_pixel or mm_per_pixel <= 0 or not math.isfinite(mm_per_pixel):
        return None
    fitting = [mm for mm in SCALE_BAR_MM if mm / mm_per_pixel <= fraction * width_px]
    if not fitting or fitting[-1] / mm_per_pixel < 4:
        return None
    mm = float(fitting[-1])
    return mm, int(round(mm / mm_per_pixel))


def draw_scale_bar(rgb: np.ndarray, length_px: int, margin: int = 12, thickness: int = 3) -> np.ndarray:
    """The picture with a scale bar (white with a black edge, end ticks) in its bottom-right corner.
    Pure numpy: fast enough for every slice change. Its label is given in the page's text."""
    out = np.array(rgb, copy=True)
    h, w = out.shape[:2]
    x1 = w - margin
    x0 = max(0, x1 - int(length_px))
    y1 = h - margin
    y0 = max(0, y1 - thickness)
    tick = 3 * thickness
    out[max(0, y0 - 1): y1 + 1, max(0, x0 - 1): x1 + 1] = 0
    out[max(0, y1 - tick - 1): y1 + 1, max(0, x0 - 1): x0 + thickness + 1] = 0
    out[max(0, y1 - tick - 1): y1 + 1, max(0, x1 - thickness - 1): x1 + 1] = 0
    out[y0:y1, x0:x1] = 255
    out[y1 - tick: y1, x0: x0 + thickness] = 255
    out[y1 - tick: y1, x1 - thickness: x1] = 255
    return out


def picture_to_voxel(scan: Scan, plane: str, index: int, size: Sequence[int], row: float,
                     col: float) -> tuple[int, int, int] | None:
    """The voxel ``(i, j, k)`` of the display-oriented ``scan`` under pixel ``(row, col)`` of a
    rendered slice of ``size`` (``None`` outside the picture)."""
    n_rows, n_cols = display_slice(scan.array[..., :1] if scan.is_color else scan.array, int(index),
                                   plane).shape[:2]
    if not (0 <= row < size[0] and 0 <= col < size[1]):
        return None
    r = min(int(row * n_rows / size[0]), n_rows - 1)
    c = min(int(col * n_cols / size[1]), n_cols - 1)
    i, j, k = scan.shape
    if plane == "axial":
        return c, r, int(index)
    if plane == "coronal":
        return c, int(index), k - 1 - r
    return int(index), c, k - 1 - r


def units(modality: str, is_ct: bool) -> str:
    """The unit of a scan's values for people: HU for CT, none otherwise (MR, X-ray and pictures
    have arbitrary intensity units)."""
    return "HU" if is_ct else ""


def readout(scan: Scan, plane: str, index: int, size: Sequence[int], row: float, col: float,
            is_ct: bool = False) -> str:
    """What the page says under the pointer: the voxel value (HU for CT) and the voxel, or "" outside."""
    voxel = picture_to_voxel(scan, plane, index, size, row, col)
    if voxel is None:
        return ""
    value = scan.array[voxel]
    if scan.is_color:
        shown = "RGB " + ", ".join(f"{float(v):.0f}" for v in np.ravel(value)[:3])
    else:
        v = float(value)
        unit = units(scan.modality, is_ct)
        shown = (f"{v:.0f} {unit}" if float(v).is_integer() or unit else f"{v:.4g}").strip()
    return f"{shown} at voxel ({voxel[0]}, {voxel[1]}, {voxel[2]})"


def display_modality(scan: Scan, card_modalities: Sequence[str] = (), is_ct: bool = False) -> str:
    """The modality to show: the file's; for a file that records none (NIfTI, ``OT``) whose values are
    Hounsfield units, CT when the selected model's card says it was trained on CT."""
    m = scan.modality or ""
    if m not in ("", "OT"):
        return m
    if is_ct and [x.upper() for x in card_modalities] == ["CT"]:
        return "CT (not recorded in the file: values in HU, model trained on CT)"
    return "not recorded in the file" if scan.format == "nifti" else (m or "unknown")


# --- the fast path for scrolling -----------------------------------------------------------------

_LUTS: dict[str, np.ndarray] = {}


def _colour_lut(cmap: str) -> np.ndarray:
    """The colormap's 256 entries as float32 RGB in [0, 1] (matplotlib indexes ``floor(v * 256)``)."""
    if cmap not in _LUTS:
        import matplotlib

        _LUTS[cmap] = np.asarray(matplotlib.colormaps[cmap].resampled(256)(np.arange(256))[:, :3], np.float32)
    return _LUTS[cmap]


def render_fast(scan: Scan, plane: str, index: int, window: tuple[float, float] | None,
                saliency: Scan | None = None, alpha: float = SALIENCY_ALPHA, cmap: str = SALIENCY_CMAP,
                min_side: int = MIN_DISPLAY_SIDE, threshold: float = SALIENCY_THRESHOLD) -> np.ndarray:
    """:func:`render` without a contour, in float32 with a 256-entry colour table: the same picture
    (each channel within one grey level) in a fraction of the time, for every wheel step."""
    if scan.is_color or saliency is None:
        return render(scan, plane, index, window, saliency, alpha=alpha, cmap=cmap, min_side=min_side,
                      threshold=threshold)
    n = n_slices(scan, plane)
    if not 0 <= int(index) < n:
        raise ValueError(f"{plane} slice {index} is outside 0..{n - 1}")
    if window is None:
        raise ValueError("a gray image needs a window (center, width)")
    if saliency.shape != scan.shape:
        raise ValueError(f"saliency grid {saliency.shape} differs from the scan's {scan.shape}")
    img = display_slice(scan.array, int(index), plane)
    size = display_size(img.shape[:2], display_aspect(scan, plane), min_side)
    center, width = float(window[0]), max(float(window[1]), 1e-6)
    gray = _resample(img, size)
    gray -= np.float32(center - width / 2.0)
    gray *= np.float32(1.0 / width)
    np.clip(gray, 0.0, 1.0, out=gray)
    gray = np.nan_to_num(gray, nan=0.0)
    sal = np.nan_to_num(_resample(display_slice(saliency.array, int(index), plane), size), nan=0.0)
    np.clip(sal, 0.0, 1.0, out=sal)
    out = np.repeat(gray[..., None], 3, axis=2)
    shown = sal >= threshold if threshold > 0 else np.ones(sal.shape, bool)
    a = float(np.clip(alpha, 0.0, 1.0))
    if a > 0 and shown.any():
        idx = np.minimum((sal[shown] * 256.0).astype(np.int32), 255)
        out[shown] = (1.0 - a) * gray[shown][:, None] + a * _colour_lut(cmap)[idx]
    out *= 255.0
    return np.rint(out).astype(np.uint8)
