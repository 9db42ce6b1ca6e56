"""Synthetic chest-CT cohort: the data medtl's tests, benchmarks and demo run on.

A binary task, ``lesion`` (label 1) against ``normal`` (label 0), on a
procedural chest phantom (body, fat rim, two textured lungs, heart, spine,
ribs, sternum) with a round soft-tissue nodule in one lung for positives. Every
positive case ships a lesion mask, so saliency maps can be scored.

The same phantom is written four ways (manifest column ``kind``):

* ``ct2d``   one axial slice as a real CT DICOM file (uncompressed, RLE lossless
  or JPEG 2000 lossless), HU = stored - 1024; mask: PNG.
* ``ct3d``   a volume as NIfTI (``.nii.gz``, RAS affine, HU); mask: NIfTI.
* ``series`` a volume as a DICOM series (one file per slice, LPS geometry);
  mask: NIfTI in the RAS voxel order of the sorted series.
* ``png``    an X-ray-like projection (digitally reconstructed radiograph),
  8-bit (one 16-bit file); mask: PNG.

Two synthetic sites differ the way two scanners and protocols do (:data:`SITES`):

* site A: standard-dose protocol, ``STANDARD`` reconstruction kernel, 12 HU of
  fine-grained noise, 2.5 mm pixels, 12-bit storage.
* site B: a low-dose protocol reconstructed with a ``SOFT`` kernel and strong
  iterative reconstruction, as a second hospital might run it: blurrier (PSF
  sigma 2.2 mm), coarser matrix (3.2 mm pixels, 5 mm slices), an HU scale 10 %
  low about water (calibration drift), and far more noise, most of it coarse
  "mottle" correlated over about 6 mm (the blotchy texture iterative
  reconstruction leaves at low dose) on top of 35 HU of fine-grained noise.
  Its projections (``png``) are blurrier and noisier, with another display curve.

Site B's mottle is deliberately strong: the demo trains at 64 px (5 mm pixels),
which averages fine-grained noise away, and a 40-case test set has to show the
drop. Everything site B changes is scanner physics (dose, kernel, matrix,
calibration), none of it anatomy, so augmentation that imitates scanners
(noise, smoothing, low resolution, intensity curves) can prepare a model for it.
Models train on site A and are evaluated on A (in-domain) and B (shifted); B
appears in ``test`` only.

Everything is deterministic: the same ``seed`` gives byte-identical files.
Each image draws from its own ``np.random.default_rng([seed, patient, image])``
so one case never depends on the order or number of the others.

World coordinates below are DICOM patient coordinates (LPS, millimetres):
x towards the patient's left, y posterior, z superior.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    UID,
    generate_uid,
)
from scipy import ndimage

from medtl._fileutil import atomic_path
from medtl._paths import cache_root
from medtl.errors import MedtlError, ScanError

__all__ = [
    "GENERATOR_VERSION",
    "KINDS",
    "LANDMARKS_MM",
    "MANIFEST_COLUMNS",
    "SAMPLE_NAMES",
    "SITES",
    "SIZES",
    "SiteProfile",
    "main",
    "make_cohort",
    "sample_dir",
    "sample_path",
    "write_without_lesion",
]

#: Bump when the generated content changes; names the cache folder.
#: 2: site B got a low-dose protocol's coarse noise (mottle) and its kernel became a SiteProfile field.
#: 3: CT slices carry AcquisitionNumber (type 2 of the CT Image module); pixels unchanged.
GENERATOR_VERSION = 3
SIZES = ("small", "full")
KINDS = ("ct2d", "ct3d", "series", "png")
MANIFEST_COLUMNS = ("path", "label", "split", "patient_id", "site", "mask", "kind")

#: In-plane LPS points (x, y) in mm that hold the named tissue on every axial
#: slice (|z| <= 75 mm) of every generated patient, whatever the site. A lesion
#: may cover one of the two lung points on a positive case, never both.
LANDMARKS_MM: dict[str, tuple[float, float]] = {
    "right_lung": (-63.0, 4.0),
    "left_lung": (66.0, 6.0),
    "spine": (0.0, 48.0),
    "air": (-140.0, -140.0),
}

_HU_AIR = -1000.0
_HU_FAT = -100.0
_HU_SOFT = 40.0
_HU_LUNG = -850.0
_HU_VESSEL = -100.0
_HU_CORTEX = 1000.0
_HU_CANCELLOUS = 500.0
_HU_RIB = 750.0
_HU_STERNUM = 600.0
_HU_CSF = 20.0
_INTERCEPT = -1024
_DATE = "20240101"
_TIME = "120000"
_UID_TAG = "medtl-sample-data"


@dataclass(frozen=True)
class SiteProfile:
    """How one synthetic scanner images the phantom (the domain-shift knobs)."""

    name: str
    manufacturer: str
    noise_hu: float  # fine-grained CT noise std, HU (correlated over 0.6 pixel: the kernel's texture)
    gain: float  # HU multiplier about water: < 1 lowers contrast (a drifted HU calibration)
    blur_mm: float  # in-plane point-spread sigma, mm (reconstruction kernel: larger = softer)
    ct2d_matrix: int  # rows = columns of a 2D slice
    ct2d_spacing: float  # mm per pixel
    ct2d_thickness: float
    vol_shape: tuple[int, int, int]  # (nx, ny, nz)
    vol_spacing: tuple[float, float, float]  # (dx, dy, dz) mm
    png_matrix: int
    png_blur_mm: float
    png_noise: float  # std in [0, 1] display units
    png_gamma: float
    png_range: tuple[float, float]  # display values of empty and densest path
    kernel: str = "STANDARD"  # reconstruction kernel, written as DICOM ConvolutionKernel
    # Coarse noise ("mottle") on top of ``noise_hu``: low dose with strong iterative reconstruction
    # leaves noise correlated over millimetres, which survives downsampling where fine noise does not.
    mottle_hu: float = 0.0  # its std, HU (0: none)
    mottle_mm: float = 6.0  # its correlation length (Gaussian sigma), mm


SITES: dict[str, SiteProfile] = {
    "A": SiteProfile(
        name="A", manufacturer="SiteA", noise_hu=12.0, gain=1.0, blur_mm=0.8,
        ct2d_matrix=128, ct2d_spacing=2.5, ct2d_thickness=2.5,
        vol_shape=(64, 64, 32), vol_spacing=(4.5, 4.5, 5.0),
        png_matrix=128, png_blur_mm=0.8, png_noise=0.01, png_gamma=1.0, png_range=(0.0, 1.0),
    ),
    # Low-dose protocol, soft kernel with strong iterative reconstruction, coarser matrix, HU scale
    # 10 % low: noise 35 HU fine-grained plus 200 HU of mottle (6 mm), ~17x site A's noise std.
    "B": SiteProfile(
        name="B", manufacturer="SiteB", noise_hu=35.0, gain=0.9, blur_mm=2.2,
        ct2d_matrix=100, ct2d_spacing=3.2, ct2d_thickness=5.0,
        vol_shape=(48, 48, 20), vol_spacing=(6.0, 6.0, 8.0),
        png_matrix=100, png_blur_mm=2.5, png_noise=0.025, png_gamma=0.75, png_range=(0.08, 0.85),
        kernel="SOFT", mottle_hu=200.0, mottle_mm=6.0,
    ),
}

# Patients per (kind, site, split); labels alternate 1, 0 inside each group so
# every group is balanced. ct2d training patients contribute two slices each.
_PLAN_COUNTS: dict[str, dict[str, dict[tuple[str, str], int]]] = {
    "small": {
        "ct2d": {("A", "train"): 10, ("A", "val"): 4, ("A", "test"): 8, ("B", "test"): 8},
        "ct3d": {("A", "train"): 4, ("A", "val"): 2, ("A", "test"): 2, ("B", "test"): 2},
        "series": {("A", "train"): 2, ("B", "test"): 2},
        "png": {("A", "train"): 4, ("A", "val"): 2, ("A", "test"): 2, ("B", "test"): 2},
    },
    "full": {
        "ct2d": {("A", "train"): 120, ("A", "val"): 30, ("A", "test"): 40, ("B", "test"): 40},
        "ct3d": {("A", "train"): 24, ("A", "val"): 8, ("A", "test"): 8, ("B", "test"): 8},
        "series": {("A", "train"): 4, ("A", "test"): 4, ("B", "test"): 4},
        "png": {("A", "train"): 40, ("A", "val"): 10, ("A", "test"): 14, ("B", "test"): 14},
    },
}
_CT2D_SLICES = {"train": 2, "val": 1, "test": 1}
_CT2D_SYNTAXES = (ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless)

#: Names accepted by :func:`sample_path`.
SAMPLE_NAMES = ("ct2d", "ct2d_rle", "ct2d_j2k", "ct3d", "series", "png", "png16", "manifest")


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Case:
    """One patient of the cohort and how it is written."""

    number: int
    kind: str
    site: str
    split: str
    label: int
    kind_index: int  # position among the patients of this kind

    @property
    def patient_id(self) -> str:
        return f"P{self.number:04d}"


def _plan(size: str) -> list[_Case]:
    """Patients of a cohort size, in a fixed order (independent of the seed)."""
    if size not in _PLAN_COUNTS:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    cases: list[_Case] = []
    number = 1
    for kind in KINDS:
        kind_index = 0
        for (site, split), count in _PLAN_COUNTS[size][kind].items():
            for i in range(count):
                cases.append(_Case(number, kind, site, split, 1 - i % 2, kind_index))
                number += 1
                kind_index += 1
    return cases


# ------------------------------------------------------------------------ phantom


@dataclass(frozen=True)
class _Phantom:
    """Geometry of one synthetic patient (LPS mm)."""

    a: float  # body half-width (x)
    b: float  # body half-depth (y)
    fat: float  # subcutaneous fat thickness
    lungs: tuple[tuple[float, ...], tuple[float, ...]]  # (cx, cy, cz, rx, ry, rz) right, left
    heart: tuple[float, ...]
    spine_y: float
    rib_phase: float
    nodule: tuple[float, float, float, float, float]  # cx, cy, cz, radius, HU
    has_lesion: bool


def _ellipsoid(x, y, z, e: Sequence[float]) -> np.ndarray:
    cx, cy, cz, rx, ry, rz = e
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2


def _rib_rho(ph: _Phantom, x, y) -> np.ndarray:
    """Normalised radius w.r.t. the inner (muscle) ellipse; ribs sit at 0.88-0.97."""
    return np.sqrt((x / (ph.a - ph.fat)) ** 2 + (y / (ph.b - ph.fat)) ** 2)


def _nodule_fits(ph: _Phantom, side: int, c: np.ndarray, r: float) -> bool:
    """True when a sphere (plus 4 mm) lies inside the chosen lung, clear of heart and ribs."""
    dirs = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float)
    norms = np.linalg.norm(dirs, axis=1)
    dirs[norms > 0] /= norms[norms > 0, None]
    pts = c + dirs * (r + 4.0)
    x, y, z = pts.T
    return bool(
        np.all(_ellipsoid(x, y, z, ph.lungs[side]) < 1.0)
        and np.all(_ellipsoid(x, y, z, ph.heart) > 1.0)
        and np.all(_rib_rho(ph, x, y) < 0.86)
    )


def _make_phantom(rng: np.random.Generator, label: int) -> _Phantom:
    """Draw one patient. A nodule is drawn for every patient (so positives and
    negatives share the slice-position distribution) and painted only if label 1."""
    sx, sy = rng.uniform(0.93, 1.07, size=2)
    a, b = 132.0 * sx, 95.0 * sy
    lz = 10.0 + rng.uniform(-5.0, 5.0)
    right = (-0.48 * a, 0.04 * b, lz, 0.33 * a, 0.62 * b, 125.0)
    left = (0.50 * a, 0.06 * b, lz - 5.0, 0.31 * a, 0.60 * b, 120.0)
    heart = (0.08 * a, -0.28 * b, -45.0, 0.28 * a, 0.36 * b, 65.0)
    ph = _Phantom(a, b, float(rng.uniform(6.0, 14.0)), (right, left), heart, 0.50 * b,
                  float(rng.uniform(0.0, 24.0)), (0.0, 0.0, 0.0, 0.0, 0.0), False)
    radius = float(rng.uniform(14.0, 22.0))
    hu = float(rng.uniform(30.0, 60.0))
    side = int(rng.integers(2))
    lung = ph.lungs[side]
    for _ in range(10_000):
        c = np.array([lung[0], lung[1], 0.0]) + rng.uniform(-1, 1, 3) * np.array([lung[3], lung[4], 0.0])
        c[2] = rng.uniform(-45.0, 45.0)
        if _nodule_fits(ph, side, c, radius):
            break
    else:  # pragma: no cover - the lung is always large enough for a 22 mm nodule
        raise RuntimeError("could not place the nodule inside the lung")
    nodule = (float(c[0]), float(c[1]), float(c[2]), radius, hu)
    return replace(ph, nodule=nodule, has_lesion=bool(label))


def _render(
    ph: _Phantom,
    xs: np.ndarray,
    ys: np.ndarray,
    zs: np.ndarray,
    rng: np.random.Generator,
    texture: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free HU on the grid ``zs x ys x xs`` (array order ``[z, y, x]``) and the
    lesion mask. Axes are 1-D coordinate vectors in mm (any length, any order)."""
    z = np.asarray(zs, np.float32)[:, None, None]
    y = np.asarray(ys, np.float32)[None, :, None]
    x = np.asarray(xs, np.float32)[None, None, :]
    shape = (z.shape[0], y.shape[1], x.shape[2])
    hu = np.full(shape, _HU_AIR, np.float32)

    def paint(where: np.ndarray, value) -> None:
        np.copyto(hu, value, where=np.broadcast_to(where, shape))

    body = (x / ph.a) ** 2 + (y / ph.b) ** 2 <= 1.0
    inner = _rib_rho(ph, x, y) <= 1.0
    paint(body, _HU_FAT)
    paint(inner, _HU_SOFT)

    heart = _ellipsoid(x, y, z, ph.heart) <= 1.0
    lung = ((_ellipsoid(x, y, z, ph.lungs[0]) <= 1.0) | (_ellipsoid(x, y, z, ph.lungs[1]) <= 1.0)) & ~heart
    parenchyma = np.full(shape, _HU_LUNG, np.float32)
    if texture:
        step = np.array([_step(zs), _step(ys), _step(xs)])
        fine = _smooth_noise(rng, shape, 2.0 / step)
        vessels = _smooth_noise(rng, shape, 1.2 / step)
        parenchyma += 25.0 * fine
        parenchyma[vessels > 2.3] = _HU_VESSEL
    paint(lung, parenchyma)

    # Spine: vertebral body (cortex + cancellous), canal, arch and spinous process.
    r_body = np.sqrt(x**2 + (y - ph.spine_y) ** 2)
    r_canal = np.sqrt(x**2 + (y - ph.spine_y - 20.0) ** 2)
    paint(r_body <= 15.0, _HU_CORTEX)
    paint(r_body <= 12.5, _HU_CANCELLOUS)
    paint(r_canal <= 11.0, _HU_CORTEX - 200.0)
    paint(r_canal <= 6.0, _HU_CSF)
    paint((x / 4.0) ** 2 + ((y - ph.spine_y - 32.0) / 7.0) ** 2 <= 1.0, _HU_CORTEX - 200.0)

    # Ribs: oblique bands (posterior end higher) in the chest wall, leaving the
    # midline to sternum and spine.
    rho = _rib_rho(ph, x, y)
    band = np.mod(z - 0.4 * y - ph.rib_phase, 24.0) < 9.0
    ribs = band & (rho >= 0.88) & (rho <= 0.97) & (np.abs(x) > 28.0) & (z > -120.0) & (z < 140.0)
    paint(ribs, _HU_RIB)
    sternum_y = -(ph.b - ph.fat) + 9.0
    sternum = ((x / 13.0) ** 2 + ((y - sternum_y) / 6.0) ** 2 <= 1.0) & (z > -90.0) & (z < 110.0)
    paint(sternum, _HU_STERNUM)

    cx, cy, cz, radius, lesion_hu = ph.nodule
    lesion = np.broadcast_to((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius**2, shape)
    if ph.has_lesion:
        paint(lesion, lesion_hu)
        return hu, lesion.copy()
    return hu, np.zeros(shape, bool)


def _step(coords: np.ndarray) -> float:
    """Grid step of a coordinate vector (1 for a single sample: no smoothing across it)."""
    return float(abs(coords[1] - coords[0])) if len(coords) > 1 else np.inf


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_px, mode: str = "reflect") -> np.ndarray:
    """Unit-variance Gaussian noise smoothed with ``sigma_px`` per axis (0 = none). ``mode="wrap"``
    keeps the variance the same up to the edges (``reflect`` raises it there when sigma is large)."""
    sigma = np.where(np.isfinite(sigma_px), sigma_px, 0.0)
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode=mode)
    return field / max(float(field.std()), 1e-6)


def _acquire_ct(hu: np.ndarray, site: SiteProfile, spacing_zyx, rng: np.random.Generator) -> np.ndarray:
    """Apply a site's scanner: blur (PSF), fine-grained noise, coarse noise (mottle), HU gain;
    return stored values (HU + 1024, clipped to 12 bits) as uint16."""
    dz, dy, dx = spacing_zyx
    psf = [0.4 if np.isfinite(dz) else 0.0, site.blur_mm / dy, site.blur_mm / dx]
    out = ndimage.gaussian_filter(hu, psf)
    out += site.noise_hu * _smooth_noise(rng, hu.shape, [0.0, 0.6, 0.6])
    if site.mottle_hu:  # drawn last, so a site without mottle keeps its random stream
        grain = [0.0, site.mottle_mm / dy, site.mottle_mm / dx]
        out += site.mottle_hu * _smooth_noise(rng, hu.shape, grain, mode="wrap")
    out *= site.gain
    return np.clip(np.rint(out) - _INTERCEPT, 0, 4095).astype(np.uint16)


# ------------------------------------------------------------------------ writers


def _uid(seed: int, *parts: object) -> UID:
    """A DICOM UID fixed by the seed and the parts (pydicom hashes the entropy
    sources under its own root; ``prefix=None`` would ignore them)."""
    return generate_uid(entropy_srcs=[_UID_TAG, str(seed), *map(str, parts)])


def _ct_dataset(
    stored: np.ndarray,
    *,
    case: _Case,
    seed: int,
    series: str,
    instance: int,
    position: Sequence[float],
    spacing: float,
    thickness: float,
    syntax: UID,
    description: str,
) -> Dataset:
    """A CT Image Storage dataset for one axial slice (rows = y, columns = x)."""
    site = SITES[case.site]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop = _uid(seed, case.patient_id, series, "sop", instance)
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = _DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = _TIME
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = site.manufacturer
    ds.ManufacturerModelName = f"medtl synthetic scanner {site.name}"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic chest CT (medtl sample data)"
    ds.SeriesDescription = description
    ds.PatientName = f"Synthetic^{case.patient_id}"
    ds.PatientID = case.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = thickness
    ds.KVP = 120
    ds.ConvolutionKernel = site.kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = _uid(seed, case.patient_id, "study")
    ds.SeriesInstanceUID = _uid(seed, case.patient_id, series, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1  # type 2 in the CT Image module (dciodvfy: missing)
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [round(float(v), 4) for v in position]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = _uid(seed, case.patient_id, "frame")
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = round(float(position[2]), 4)
    ds.PixelSpacing = [spacing, spacing]
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = _INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    # Site A: classic 12-bit unsigned; site B: 16-bit signed (both HU = stored - 1024).
    if site.name == "A":
        ds.set_pixel_data(stored.astype(np.uint16), "MONOCHROME2", 12, generate_instance_uid=False)
    else:
        ds.set_pixel_data(stored.astype(np.int16), "MONOCHROME2", 16, generate_instance_uid=False)
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, generate_instance_uid=False)
    return ds


def _save_dicom(ds: Dataset, path: Path) -> None:
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, inter: float = 0.0) -> None:
    """Write ``data`` ([i, j, k]) as .nii.gz with qform = sform = ``affine`` (scanner
    space). gzip is done here with mtime 0 and no file name, so bytes are stable."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header.set_slope_inter(1.0, inter)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=9, mtime=0))


def _save_png(array: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _mask_png(mask2d: np.ndarray) -> np.ndarray:
    return (mask2d.astype(np.uint8) * 255).astype(np.uint8)


def _axis(n: int, step: float) -> np.ndarray:
    """Pixel-centre coordinates of ``n`` samples centred on 0."""
    return (np.arange(n) - (n - 1) / 2.0) * step


def _lps_voxels(vol: np.ndarray, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[z, y, x]`` grid as a NIfTI array in DICOM voxel order (i = column towards
    patient left, j = row towards posterior, k = +z; axis codes L, P, S) and its
    RAS+ affine: what a DICOM series becomes without reorientation."""
    affine = np.diag([-_step(xs), -_step(ys), _step(zs), 1.0])
    affine[:3, 3] = [-xs[0], -ys[0], zs[0]]
    return vol.transpose(2, 1, 0), affine


def _ras_voxels(vol: np.ndarray, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[z, y, x]`` grid as a canonical NIfTI array (axis codes R, A, S) and its affine."""
    affine = np.diag([_step(xs), _step(ys), _step(zs), 1.0])
    affine[:3, 3] = [-xs[-1], -ys[-1], zs[0]]
    return vol.transpose(2, 1, 0)[::-1, ::-1, :], affine


# ------------------------------------------------------------------------- kinds

_Row = dict[str, str]


def _row(case: _Case, path: str, mask: str) -> _Row:
    return {"path": path, "label": str(case.label), "split": case.split, "patient_id": case.patient_id,
            "site": case.site, "mask": mask if case.label else "", "kind": case.kind}


def _write_ct2d(case: _Case, seed: int, out: Path, file_counter: int) -> list[_Row]:
    site = SITES[case.site]
    ph = _make_phantom(np.random.default_rng([seed, case.number]), case.label)
    n = _CT2D_SLICES[case.split]
    coords = _axis(site.ct2d_matrix, site.ct2d_spacing)
    rows = []
    for s in range(n):
        rng = np.random.default_rng([seed, case.number, s + 1])
        radius = ph.nodule[3]
        offset = (-0.35 + 0.7 * s) * radius if n == 2 else rng.uniform(-0.3, 0.3) * radius
        z = round(ph.nodule[2] + offset, 1)
        hu, lesion = _render(ph, coords, coords, np.array([z]), rng)
        stored = _acquire_ct(hu, site, (np.inf, site.ct2d_spacing, site.ct2d_spacing), rng)[0]
        syntax = _CT2D_SYNTAXES[(file_counter + s) % 3]
        name = f"{case.patient_id}_{s + 1}"
        ds = _ct_dataset(stored, case=case, seed=seed, series="ct2d", instance=s + 1,
                         position=(coords[0], coords[0], z), spacing=site.ct2d_spacing,
                         thickness=site.ct2d_thickness, syntax=syntax, description="Axial chest slice")
        _save_dicom(ds, out / "ct2d" / f"{name}.dcm")
        mask = ""
        if case.label:
            mask = f"masks/ct2d/{name}.png"
            _save_png(_mask_png(lesion[0]), out / mask)
        rows.append(_row(case, f"ct2d/{name}.dcm", mask))
    return rows


def _volume(case: _Case, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Stored values (uint16, [z, y, x]), lesion mask and the x, y, z axes."""
    site = SITES[case.site]
    ph = _make_phantom(np.random.default_rng([seed, case.number]), case.label)
    rng = np.random.default_rng([seed, case.number, 1])
    (nx, ny, nz), (dx, dy, dz) = site.vol_shape, site.vol_spacing
    xs, ys, zs = _axis(nx, dx), _axis(ny, dy), _axis(nz, dz)
    hu, lesion = _render(ph, xs, ys, zs, rng)
    return _acquire_ct(hu, site, (dz, dy, dx), rng), lesion, (xs, ys, zs)


def _write_ct3d(case: _Case, seed: int, out: Path) -> list[_Row]:
    stored, lesion, axes = _volume(case, seed)
    ijk, affine = _ras_voxels(stored, *axes)
    path = f"ct3d/{case.patient_id}.nii.gz"
    # Half the volumes store int16 HU, half uint16 (HU + 1024) with scl_inter = -1024;
    # pairs of patients (one of each label) share a storage, so it never tells the label.
    if (case.kind_index // 2) % 2 == 0:
        _save_nifti((ijk.astype(np.int32) + _INTERCEPT).astype(np.int16), affine, out / path)
    else:
        _save_nifti(ijk, affine, out / path, inter=float(_INTERCEPT))
    mask = ""
    if case.label:
        mask = f"masks/ct3d/{case.patient_id}.nii.gz"
        _save_nifti(_ras_voxels(lesion, *axes)[0].astype(np.uint8), affine, out / mask)
    return [_row(case, path, mask)]


def _write_series(case: _Case, seed: int, out: Path) -> list[_Row]:
    stored, lesion, (xs, ys, zs) = _volume(case, seed)
    site = SITES[case.site]
    nz = len(zs)
    # Encoding pattern 0, 1, 1, 0: both labels and both sites get both encodings.
    syntax = RLELossless if (case.kind_index + case.kind_index // 2) % 2 else ExplicitVRLittleEndian
    folder = f"series/{case.patient_id}"
    for k in range(nz):
        instance = nz - k  # scanner order: head first, so InstanceNumber runs against +z
        ds = _ct_dataset(stored[k], case=case, seed=seed, series="series", instance=instance,
                         position=(xs[0], ys[0], zs[k]), spacing=site.vol_spacing[0],
                         thickness=site.vol_spacing[2], syntax=syntax, description="Axial chest series")
        _save_dicom(ds, out / folder / f"IM{instance:04d}.dcm")
    mask = ""
    if case.label:
        mask = f"masks/series/{case.patient_id}.nii.gz"
        _save_nifti(*_lps_voxels(lesion.astype(np.uint8), xs, ys, zs), out / mask)
    return [_row(case, folder, mask)]


def _write_png(case: _Case, seed: int, out: Path, sixteen_bit: bool) -> list[_Row]:
    """An X-ray-like frontal projection: line integral of attenuation along y
    (rows = superior to inferior, columns = patient right to left)."""
    site = SITES[case.site]
    ph = _make_phantom(np.random.default_rng([seed, case.number]), case.label)
    rng = np.random.default_rng([seed, case.number, 1])
    step = 320.0 / site.png_matrix
    xs = _axis(site.png_matrix, step)
    zs = -_axis(site.png_matrix, step)
    ys = np.arange(-110.0, 110.0 + 1e-6, 5.0)
    hu, lesion = _render(ph, xs, ys, zs, rng, texture=False)
    path_len = np.clip(hu + 1000.0, 0.0, None).sum(axis=1) * (5.0 / 1000.0)  # mm of water
    lo, hi = site.png_range
    v = lo + (hi - lo) * np.clip(path_len / 250.0, 0.0, 1.0) ** site.png_gamma
    v = ndimage.gaussian_filter(v, site.png_blur_mm / step)
    v = np.clip(v + site.png_noise * rng.standard_normal(v.shape), 0.0, 1.0)
    path = f"png/{case.patient_id}.png"
    _save_png((np.rint(v * 65535).astype(np.uint16) if sixteen_bit else np.rint(v * 255).astype(np.uint8)),
              out / path)
    mask = ""
    if case.label:
        mask = f"masks/png/{case.patient_id}.png"
        _save_png(_mask_png(lesion.any(axis=1)), out / mask)
    return [_row(case, path, mask)]


# ------------------------------------------------------------------------ cohort


def _first_line(path: Path) -> str | None:
    """The first line of a text file (None when it cannot be read as UTF-8 text)."""
    try:
        with path.open(encoding="utf-8") as fh:
            return fh.readline(500).rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return None


def _check_cohort_folder(out: Path) -> None:
    """Refuse a folder whose ``manifest.csv`` or ``README.md`` a cohort did not write: a user's manifest is
    never replaced, nor are the files it lists deleted (:func:`_remove_previous`). A cohort killed half
    way (no manifest yet) is written again."""
    if out.exists() and not out.is_dir():
        raise MedtlError(f"{out}: is a file, not a folder; choose another folder for the sample cohort")
    owned = {"manifest.csv": lambda line: line == ",".join(MANIFEST_COLUMNS),
             "README.md": lambda line: line.startswith("# medtl synthetic sample cohort")}
    for name, ours in owned.items():
        path = out / name
        if path.exists() and not ours(_first_line(path) or ""):
            raise MedtlError(f"{path}: exists and was not written by medtl sample-data; refusing to replace it "
                             "(or delete the files it lists): choose a new or empty folder")


def _remove_previous(out: Path) -> None:
    """Delete what an earlier cohort in ``out`` wrote (only files it listed; :func:`_check_cohort_folder`
    made sure the manifest is a cohort's)."""
    manifest = out / "manifest.csv"
    if not manifest.is_file():
        return
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for rel in (row.get("path") or "", row.get("mask") or ""):
            target = out / rel
            if rel and target.is_dir() and rel.startswith("series/"):
                shutil.rmtree(target)
            elif rel and target.is_file():
                target.unlink()
    manifest.unlink()


def make_cohort(out_dir: str | os.PathLike, size: str = "small", seed: int = 0, progress: bool = False) -> Path:
    """Write the synthetic cohort into ``out_dir`` and return its ``manifest.csv``.

    ``size`` is ``"small"`` (the copy committed under ``sample_data/``, about 3 MB) or
    ``"full"`` (about 400 2D images and 60 volumes, generated in seconds). The
    same ``size`` and ``seed`` give byte-identical files. A cohort previously
    written to ``out_dir`` is replaced (only the files its manifest lists).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    seed = int(seed)
    out = Path(out_dir)
    _check_cohort_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous(out)
    cases = _plan(size)
    first_png = next(c.number for c in cases if c.kind == "png")
    iterator: Iterable[_Case] = cases
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(cases, desc=f"sample data ({size})", unit="patient")
    rows: list[_Row] = []
    ct2d_files = 0
    for case in iterator:
        if case.kind == "ct2d":
            new = _write_ct2d(case, seed, out, ct2d_files)
            ct2d_files += len(new)
        elif case.kind == "ct3d":
            new = _write_ct3d(case, seed, out)
        elif case.kind == "series":
            new = _write_series(case, seed, out)
        else:
            new = _write_png(case, seed, out, sixteen_bit=case.number == first_png)
        rows.extend(new)
    (out / "README.md").write_text(_readme(rows, size, seed), encoding="utf-8")
    return _write_manifest(out, rows)


def _write_manifest(out: Path, rows: Sequence[_Row]) -> Path:
    """``out/manifest.csv`` with :data:`MANIFEST_COLUMNS`, written atomically."""
    manifest = out / "manifest.csv"
    with atomic_path(manifest) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return manifest


def write_without_lesion(out_dir: str | os.PathLike, patient_ids: Iterable[str], size: str = "small",
                         seed: int = 0) -> Path:
    """Write the listed patients of ``make_cohort(size, seed)`` again, rendered without their nodule.

    Same file names, encodings, geometry, anatomy and noise as the cohort (every case
    draws its nodule, painted or not, from its own RNG), so the only difference from
    the original files is the lesion: the lesion-ablation check of a model. Returns
    a ``manifest.csv`` of the files written, with the cases' true labels and no masks.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    wanted = set(patient_ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = _plan(size)
    unknown = wanted - {c.patient_id for c in cases}
    if unknown:
        raise ValueError(f"not patients of the {size} cohort: {', '.join(sorted(unknown))}")
    first_png = next(c.number for c in cases if c.kind == "png")
    rows: list[_Row] = []
    ct2d_files = 0
    for case in cases:
        n_ct2d = _CT2D_SLICES[case.split] if case.kind == "ct2d" else 0
        if case.patient_id in wanted:
            blank = replace(case, label=0)  # label 0: the nodule is drawn but not painted
            if case.kind == "ct2d":
                new = _write_ct2d(blank, seed, out, ct2d_files)
            elif case.kind == "ct3d":
                new = _write_ct3d(blank, seed, out)
            elif case.kind == "series":
                new = _write_series(blank, seed, out)
            else:
                new = _write_png(blank, seed, out, sixteen_bit=case.number == first_png)
            rows.extend({**r, "label": str(case.label)} for r in new)
        ct2d_files += n_ct2d
    return _write_manifest(out, rows)


def _mottle(site: SiteProfile) -> str:
    return f"{site.mottle_hu:g} HU; {site.mottle_mm:g} mm" if site.mottle_hu else "none"


def _readme(rows: list[_Row], size: str, seed: int) -> str:
    """The README.md written next to the manifest."""
    table = ["| kind | site | split | files | lesion | normal |", "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[int]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["site"], r["split"]), []).append(int(r["label"]))
    for (kind, site, split), labels in groups.items():
        table.append(f"| {kind} | {site} | {split} | {len(labels)} | {sum(labels)} | {len(labels) - sum(labels)} |")
    a, b = SITES["A"], SITES["B"]
    return f"""# medtl synthetic sample cohort ({size}, seed {seed})

Synthetic chest CT phantoms for a binary task: **lesion** (label 1, a round
soft-tissue nodule of 14-22 mm radius, +30..+60 HU, in one lung) against
**normal** (label 0). Nothing here comes from a real person: every image is
drawn by `medtl/demo/cohort.py` (generator version {GENERATOR_VERSION}). Patient names/IDs
(`Synthetic^P0001`) are made up.

**License: CC0 1.0** (public domain dedication) - use it for anything.

## Regenerate

```
python -m medtl.demo.cohort sample_data --size {size} --seed {seed}
```

Same size and seed give byte-identical files (fixed UIDs, dates, gzip headers).
`--size full` writes the larger cohort (a few hundred 2D images, 60 volumes) in seconds.

## Phantom

Tissues (HU, site A, before blur and noise): air {_HU_AIR:g}, lung {_HU_LUNG:g} (texture, small
vessels {_HU_VESSEL:g}), fat rim {_HU_FAT:g}, muscle/heart/mediastinum {_HU_SOFT:g}, vertebral body
{_HU_CANCELLOUS:g} inside a {_HU_CORTEX:g} cortex, ribs {_HU_RIB:g}, sternum {_HU_STERNUM:g}, nodule +30..+60.
So CT window presets look right (lung window: dark lungs; bone window: bright spine and ribs).
`medtl.demo.cohort.LANDMARKS_MM` gives in-plane LPS points that are lung, spine and air on every
axial slice of every patient.

## manifest.csv

Columns `{",".join(MANIFEST_COLUMNS)}`; paths are relative to this folder.
`kind` is one of:

- `ct2d`: one axial slice, CT Image Storage DICOM; HU = stored + RescaleIntercept (-1024),
  RescaleSlope 1, window 40/400. Encodings cycle: Explicit VR Little Endian, RLE Lossless,
  JPEG 2000 Lossless. Site A stores 12-bit unsigned, site B 16-bit signed. Mask: PNG (lesion > 0).
- `ct3d`: a volume as `.nii.gz`, canonical orientation (voxel axes R, A, S; qform = sform,
  scanner), HU via the NIfTI scaling (int16 HU, or uint16 with scl_inter -1024).
  Mask: NIfTI on the same grid and affine, 0/1.
- `series`: a folder with one CT DICOM per slice (ImageOrientationPatient 1/0/0/0/1/0,
  ImagePositionPatient along +z, LPS; InstanceNumber 1 is the most superior slice, so it runs
  against +z). Mask: NIfTI 0/1 in the series' own voxel order (i = DICOM column, j = DICOM row,
  k = slices sorted by ascending z; axis codes L, P, S) with the matching RAS+ affine.
- `png`: an X-ray-like frontal projection (rows superior to inferior, patient right on the
  left). 8-bit, except one 16-bit file. Mask: PNG, the lesion's projection (> 0).

## Sites (domain shift)

| | site A | site B |
|---|---|---|
| protocol | standard dose | low dose, strong iterative reconstruction |
| reconstruction kernel | {a.kernel} | {b.kernel} |
| CT noise, fine-grained (std, before gain) | {a.noise_hu:g} HU | {b.noise_hu:g} HU |
| CT noise, coarse mottle (std; correlation) | {_mottle(a)} | {_mottle(b)} |
| HU gain about water | {a.gain:g} | {b.gain:g} (lower contrast) |
| blur (PSF sigma) | {a.blur_mm:g} mm | {b.blur_mm:g} mm |
| 2D slice | {a.ct2d_matrix}x{a.ct2d_matrix} at {a.ct2d_spacing:g} mm | {b.ct2d_matrix}x{b.ct2d_matrix} at {b.ct2d_spacing:g} mm |
| volume (x, y, z) | {a.vol_shape} at {a.vol_spacing} mm | {b.vol_shape} at {b.vol_spacing} mm |
| projection | {a.png_matrix}x{a.png_matrix}, gamma {a.png_gamma:g} | {b.png_matrix}x{b.png_matrix}, gamma {b.png_gamma:g}, compressed range |
| DICOM Manufacturer | {a.manufacturer} | {b.manufacturer} |

**Train on site A, evaluate on A and B**: site B appears in the `test` split only.
No patient is in two splits; each kind/site/split group is label-balanced.

## Counts

{chr(10).join(table)}
"""


# ------------------------------------------------------------------------ lookup


def _repo_sample_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "sample_data"


def sample_dir() -> Path:
    """The small sample cohort: the repository's ``sample_data/`` in a checkout,
    otherwise a copy generated once into ``$MEDTL_CACHE_DIR/sample_data/v<N>``
    (default ``~/.cache/medtl``), so an installed medtl works without the repo."""
    repo = _repo_sample_dir()
    if (repo / "manifest.csv").is_file():
        return repo
    target = cache_root() / "sample_data" / f"v{GENERATOR_VERSION}"
    if (target / "manifest.csv").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Generate beside the target and rename, so concurrent callers never see half a cohort.
    tmp = Path(tempfile.mkdtemp(prefix=".sample_data-", dir=target.parent))
    try:
        make_cohort(tmp, "small", 0)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "manifest.csv").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def sample_path(name: str) -> Path:
    """One example file of the small cohort, for docs, tests and the app.

    ``ct2d`` (uncompressed DICOM slice), ``ct2d_rle``, ``ct2d_j2k``, ``ct3d``
    (NIfTI volume), ``series`` (DICOM series folder), ``png`` (8-bit), ``png16``
    (16-bit PNG) or ``manifest``. All image examples are site-A lesion cases.
    """
    if name not in SAMPLE_NAMES:
        raise ScanError(None, f"unknown sample {name!r}", f"choose one of {', '.join(SAMPLE_NAMES)}")
    root = sample_dir()
    if name == "manifest":
        return root / "manifest.csv"
    with (root / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == "1" and r["site"] == "A"]
    kind = name.split("_")[0] if name.startswith("ct2d") else ("png" if name == "png16" else name)
    for row in rows:
        if row["kind"] != kind:
            continue
        path = root / row["path"]
        if kind == "ct2d":
            wanted = {"ct2d": ExplicitVRLittleEndian, "ct2d_rle": RLELossless, "ct2d_j2k": JPEG2000Lossless}[name]
            if pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID != wanted:
                continue
        elif kind == "png":
            with Image.open(path) as img:
                if (img.mode == "L") == (name == "png16"):
                    continue
        return path
    raise ScanError(root, f"the sample cohort has no {name!r} example",
                    f"regenerate it: python -m medtl.demo.cohort {root} --size small")


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medtl.demo.cohort OUT [--size small|full] [--seed N]``."""
    parser = argparse.ArgumentParser(prog="python -m medtl.demo.cohort", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (created if missing)")
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--small", dest="size", action="store_const", const="small", help="same as --size small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    manifest = make_cohort(args.out, args.size, args.seed, progress=not args.quiet)
    with manifest.open(newline="") as fh:
        n = sum(1 for _ in csv.DictReader(fh))
    print(f"wrote {n} images to {manifest.parent} (manifest: {manifest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
