"""Plain 2D images (PNG, JPEG, TIFF, BMP) as one-slice scans."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from skimage import io as skio

from medtl.errors import CorruptFileError, ScanError
from medtl.io.scan import Scan


def read_image(path: str | os.PathLike, grayscale: bool = False) -> Scan:
    """Load a 2D image, keeping its bit depth (8 or 16 bit).

    The array is transposed to medtl's ``[i, j]`` order (``i`` along a row), as
    MONAI's image readers do, and gets a unit-spacing identity affine since a
    plain image carries no patient geometry. Colour stays RGB (alpha dropped)
    unless ``grayscale=True`` asks for its luminance.
    """
    path = Path(path)
    try:
        data = np.asarray(skio.imread(str(path)))
    except Exception as exc:  # imageio/PIL/tifffile raise many types for damaged files
        raise CorruptFileError(path, f"unreadable image ({type(exc).__name__}: {exc})",
                               "check the file is complete; re-export it") from None
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = data[..., :3]
        scan = Scan(array=np.swapaxes(data, 0, 1)[:, :, None, :], affine=np.eye(4),
                    photometric="RGB", format="image", source=str(path))
        return scan.to_grayscale() if grayscale else scan
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise ScanError(path, f"image of shape {data.shape} is not a single 2D picture",
                        "save one frame per file, or use NIfTI/DICOM for volumes")
    return Scan(array=data.T[:, :, None], affine=np.eye(4), photometric="MONOCHROME2",
                format="image", source=str(path))
