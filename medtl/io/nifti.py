"""NIfTI reading and writing through nibabel, affine preserved."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np
from numpy.lib import recfunctions

from medtl._fileutil import atomic_path
from medtl.errors import CorruptFileError, ScanError, UnsupportedFormatError, one_line
from medtl.io.guard import guarded
from medtl.io.scan import Scan, affine_is_usable, count_non_finite


def _nib_load(path: Path) -> tuple[nib.Nifti1Image, BinaryIO | gzip.GzipFile | None]:
    """The image with its data not yet read, and the file object to close once it is.

    nibabel picks the reader by extension; a misnamed file is opened from its content
    (gzip streamed, never decompressed whole in memory). A gzipped file is always opened here,
    so that :func:`_drain` can check its trailer once the voxels are read.
    """
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if path.name.lower().endswith(".nii") and not gz:
        return nib.load(str(path)), None
    fobj = gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115 - closed by the caller
    try:
        head = fobj.read(4)
        fobj.seek(0)
        klass = nib.Nifti2Image if int.from_bytes(head, "little") == 540 or int.from_bytes(head, "big") == 540 \
            else nib.Nifti1Image
        holder = nib.fileholders.FileHolder(fileobj=fobj)
        return klass.from_file_map({"header": holder, "image": holder}, mmap=False), fobj
    except BaseException:
        fobj.close()
        raise


#: NIfTI intent codes 3000-3099 are reserved for CIFTI-2 (grayordinates on brain surfaces and parcels).
_CIFTI_INTENTS = range(3000, 3100)


def _refuse_cifti(img: object, path: Path) -> None:
    """Refuse a CIFTI-2 file by name: nibabel opens a ``.nii`` one as a ``Cifti2Image``, whose header has no
    voxel dims (it failed as 'unreadable NIfTI (AttributeError ...): check the file is complete')."""
    header = getattr(img, "header", None)
    intent = int(header["intent_code"]) if isinstance(header, nib.nifti1.Nifti1Header) else None
    if isinstance(img, nib.Cifti2Image) or intent in _CIFTI_INTENTS:
        raise UnsupportedFormatError(path, "a CIFTI-2 file (data on brain surface vertices and parcels, no voxel "
                                     "grid), not a scan", "give the NIfTI volume it was made from")


def check_header(header: nib.nifti1.Nifti1Header, name: str | os.PathLike, present: int | None = None,
                 max_bytes: int | None = None) -> int:
    """Refuse a NIfTI header whose dims claim more than the limits (or than ``present`` bytes of
    voxel data); returns the bytes its voxels take once loaded. Reads nothing but the header."""
    from medtl.io import limits

    shape = [int(s) for s in header.get_data_shape()]
    if not shape or any(s < 1 for s in shape):
        raise CorruptFileError(name, f"NIfTI header claims dims {shape}", "re-export the file")
    itemsize = header.get_data_dtype().itemsize
    slope, inter = header.get_slope_inter()
    scaled = (slope is not None and slope not in (0, 1)) or (inter is not None and inter != 0)
    frames = int(np.prod(shape[2:], dtype=object)) if len(shape) > 2 else 1
    lim = limits.current() if max_bytes is None else limits.replace(limits.current(), max_bytes=max_bytes)
    nbytes = limits.check_pixels(name, "NIfTI header claims", frames=frames, rows=shape[1] if len(shape) > 1 else 1,
                                 cols=shape[0], itemsize=max(itemsize, 8 if scaled else itemsize), limits=lim)
    if present is not None:
        needed = int(np.prod(shape, dtype=object)) * itemsize
        if present < needed:
            raise CorruptFileError(name, f"NIfTI header claims {shape} {header.get_data_dtype()} voxels "
                                   f"({limits.human_bytes(needed)}) but the file holds {limits.human_bytes(present)}"
                                   " (truncated or a forged header)", "re-export or re-download the file")
    return nbytes


def _voxel_bytes_present(path: Path, img: nib.Nifti1Image) -> int | None:
    """Bytes after the voxel offset of an uncompressed file (None: unknown)."""
    try:
        offset = int(img.header.get_data_offset())
    except Exception:  # noqa: BLE001
        return None
    return max(path.stat().st_size - offset, 0)


def _drain(fobj: gzip.GzipFile, path: Path) -> None:
    """Read a gzip stream to its end once the voxels are in: nibabel stops at the last voxel,
    before the trailer, so a damaged stream whose CRC no longer matches would load as wrong
    voxels. What follows the voxels is read in 1 MiB chunks, at most ``MEDTL_MAX_BYTES``."""
    from medtl.io import limits

    cap, total = limits.current().max_bytes, 0
    while chunk := fobj.read(1 << 20):
        total += len(chunk)
        if total > cap:
            limits.check_bytes(path, "gzip stream continues after the voxels for more than", total, cap)


#: How far (mm) the sform and qform may place a voxel apart before the header counts as ambiguous; the
#: qform's float32 quaternion alone moves the corners of a large volume by about 1e-4 mm.
QFORM_SFORM_TOLERANCE_MM = 1e-2


def _warn_if_qform_disagrees(img: nib.Nifti1Image, path: Path) -> None:
    """Warn when the header holds a valid sform and a valid qform that place voxels differently.

    medtl, like nibabel, uses the sform; ITK-based tools (SimpleITK, ITK-SNAP, ANTs) take the qform
    instead whenever the sform's column lengths do not match pixdim, so the two would disagree about
    where the image is without anyone being told. The gap is measured at the volume's corners."""
    header = img.header
    if not (int(header["sform_code"]) > 0 and int(header["qform_code"]) > 0):
        return
    sform, qform = header.get_sform(), header.get_qform()
    if not np.all(np.isfinite(qform)):
        return
    shape = [max(int(s), 1) for s in (list(img.shape) + [1, 1, 1])[:3]]
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    gap = float(np.max(np.linalg.norm((sform - qform)[:3] @ corners, axis=0)))
    if gap > QFORM_SFORM_TOLERANCE_MM:
        warnings.warn(f"{path}: the header's sform and qform place voxels up to {gap:.3g} mm apart; medtl uses the "
                      "sform (as nibabel does), ITK-based tools may use the qform: check which one is right and "
                      "save the file with one geometry (e.g. nibabel's set_qform(img.get_sform()))",
                      UserWarning, stacklevel=3)


def _affine(img: nib.Nifti1Image) -> tuple[np.ndarray, dict]:
    """The voxel-to-world affine and what it leaves unknown (metadata keys).

    With a sform or qform code this is nibabel's affine. With both codes 0 the NIfTI standard's
    "method 1" applies: ``x = pixdim[1] * i`` ... with "no particular spatial orientation", which is
    medtl's identity-with-unknown-orientation (as for DICOM without ImageOrientationPatient).
    nibabel instead returns an ANALYZE affine mirrored in x (LAS), which a 3D pipeline's reorientation
    to RAS then flipped left-right, while ITK reads the same header as LPS.
    """
    header = img.header
    if int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0:
        return img.affine, {}
    zooms = (list(header.get_zooms()[:3]) + [1.0, 1.0, 1.0])[:3]
    meta: dict = {"orientation_known": False}
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        zooms = [1.0, 1.0, 1.0]
        meta.update(spacing_known=False, spacing_note="NIfTI pixdim is not positive: voxel size unknown, 1 mm assumed")
    return np.diag([*map(float, zooms), 1.0]), meta


@guarded
def read_nifti(path: str | os.PathLike) -> Scan:
    """Load a ``.nii``/``.nii.gz`` file; voxels in ``[i, j, k]`` order with nibabel's best affine
    (sform, else qform; with neither code, pixdim scaling and ``orientation_known`` False).

    Scaling (``scl_slope``/``scl_inter``) is applied; a 4D file keeps its last
    axis as channels; RGB24/RGBA32 voxels become RGB channels; complex voxels are refused.
    The modality is read from a ``medtl:modality=...`` note in the header description when
    medtl wrote the file. The header's dims are checked
    against :mod:`medtl.io.limits` (and, uncompressed, against the file size) before
    any voxel is read.
    """
    from medtl.io.limits import LimitError

    path = Path(path)
    fobj = None
    try:
        img, fobj = _nib_load(path)
        _refuse_cifti(img, path)
        gz = isinstance(fobj, gzip.GzipFile)  # a gzip stream's voxel bytes are unknown without inflating it
        check_header(img.header, path, None if gz else _voxel_bytes_present(path, img))
        data = np.asanyarray(img.dataobj)
        if gz:
            _drain(fobj, path)
    except (LimitError, CorruptFileError, UnsupportedFormatError):
        raise
    except BaseException as exc:  # noqa: BLE001 - nibabel raises many types for damaged files
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise CorruptFileError(path, f"unreadable NIfTI ({type(exc).__name__}: {one_line(exc, 160, typed=False)})",
                               "check the file is complete; re-export it") from None
    finally:
        if fobj is not None:
            fobj.close()
    affine, meta = _affine(img)
    if not affine_is_usable(affine):
        raise CorruptFileError(path, "the header's voxel-to-world matrix (sform/qform) is singular or not finite, "
                               "so voxel size and orientation are unknown",
                               "repair the header (e.g. copy the qform to the sform) or re-export the file")
    _warn_if_qform_disagrees(img, path)
    bad = count_non_finite(data)
    if bad:  # as for DICOM: a NaN reaches the network and comes out as a NaN probability
        raise CorruptFileError(path, f"{bad} of {data.size} voxel values are not finite (NaN or infinite)",
                               "replace them (e.g. with the background value) and save the file again")
    photometric = "MONOCHROME2"
    if data.dtype.names:  # RGB24 / RGBA32: a record of 3 or 4 uint8 per voxel -> RGB channels (alpha dropped)
        data = recfunctions.structured_to_unstructured(data)[..., :3]
        photometric = "RGB"
    elif np.iscomplexobj(data):  # casting to real would silently drop the imaginary part
        raise ScanError(path, f"complex-valued voxels ({data.dtype}, e.g. MR data before magnitude), not an image "
                        "medtl can classify", "save the magnitude image (e.g. numpy.abs of the data) and load that")
    if data.ndim > 4 or data.ndim < 2:
        raise ScanError(path, f"NIfTI with {data.ndim} dimensions is not a scan medtl can use",
                        "give a 2D, 3D or 3D+channel image")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if not np.issubdtype(data.dtype, np.integer) and not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32)
    descrip = img.header.get("descrip", b"")
    descrip = descrip.item().decode("latin-1", "ignore") if hasattr(descrip, "item") else ""
    modality = "OT"
    for part in descrip.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "medtl:modality" and value:
            modality = value
        elif key == "medtl:orientation" and value == "unknown":
            meta["orientation_known"] = False
        elif key == "medtl:window" and value:
            center, _, width = value.partition("/")
            meta["window_center"], meta["window_width"] = float(center), float(width)
    return Scan(array=data, affine=affine, modality=modality, photometric=photometric, format="nifti",
                source=str(path), metadata=meta)


def save_nifti(scan: Scan, path: str | os.PathLike) -> Path:
    """Write ``scan`` to ``path`` (``.nii`` or ``.nii.gz``) atomically, affine as qform and sform.

    The modality, default window and an unknown orientation (DICOM without
    ImageOrientationPatient: the affine is an assumed identity) travel in the header
    description so that a round trip keeps them.
    """
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ScanError(path, "output must end in .nii or .nii.gz", "rename the output file")
    array = scan.array
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    img = nib.Nifti1Image(array, scan.affine)
    img.header.set_qform(scan.affine, code=1)
    img.header.set_sform(scan.affine, code=1)
    img.header.set_xyzt_units("mm")
    descrip = f"medtl:modality={scan.modality}"
    if scan.metadata.get("orientation_known") is False:  # the affine's orientation is medtl's assumption
        descrip += ";medtl:orientation=unknown"
    if scan.default_window:
        descrip += f";medtl:window={scan.default_window[0]:g}/{scan.default_window[1]:g}"
    img.header["descrip"] = descrip[:79].encode("latin-1")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
