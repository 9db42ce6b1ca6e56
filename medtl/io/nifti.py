"""NIfTI reading and writing through nibabel, affine preserved."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from medtl._fileutil import atomic_path
from medtl.errors import CorruptFileError, ScanError
from medtl.io.scan import Scan


def _nib_load(path: Path) -> nib.Nifti1Image:
    """nibabel picks the reader by extension; a misnamed file is parsed from its bytes."""
    if path.name.lower().endswith((".nii", ".nii.gz")):
        return nib.load(str(path))
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    klass = nib.Nifti2Image if int.from_bytes(raw[:4], "little") == 540 or int.from_bytes(raw[:4], "big") == 540 \
        else nib.Nifti1Image
    return klass.from_bytes(raw)


def read_nifti(path: str | os.PathLike) -> Scan:
    """Load a ``.nii``/``.nii.gz`` file; voxels in ``[i, j, k]`` order with nibabel's best affine.

    Scaling (``scl_slope``/``scl_inter``) is applied; a 4D file keeps its last
    axis as channels. The modality is read from a ``medtl:modality=...`` note in
    the header description when medtl wrote the file.
    """
    path = Path(path)
    try:
        img = _nib_load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise CorruptFileError(path, f"unreadable NIfTI ({type(exc).__name__}: {exc})",
                               "check the file is complete; re-export it") from None
    if data.ndim > 4 or data.ndim < 2:
        raise ScanError(path, f"NIfTI with {data.ndim} dimensions is not a scan medtl can use",
                        "give a 2D, 3D or 3D+channel image")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if not np.issubdtype(data.dtype, np.integer) and not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32)
    descrip = img.header.get("descrip", b"")
    descrip = descrip.item().decode("latin-1", "ignore") if hasattr(descrip, "item") else ""
    meta: dict = {}
    modality = "OT"
    for part in descrip.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "medtl:modality" and value:
            modality = value
        elif key == "medtl:window" and value:
            center, _, width = value.partition("/")
            meta["window_center"], meta["window_width"] = float(center), float(width)
    return Scan(array=data, affine=img.affine, modality=modality, format="nifti",
                source=str(path), metadata=meta)


def save_nifti(scan: Scan, path: str | os.PathLike) -> Path:
    """Write ``scan`` to ``path`` (``.nii`` or ``.nii.gz``) atomically, affine as qform and sform.

    The modality and default window travel in the header description so that a
    round trip keeps them.
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
    if scan.default_window:
        descrip += f";medtl:window={scan.default_window[0]:g}/{scan.default_window[1]:g}"
    img.header["descrip"] = descrip[:79].encode("latin-1")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
