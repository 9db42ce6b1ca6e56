"""Plain 2D images (PNG, JPEG, TIFF, BMP) as one-slice scans."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
from skimage import io as skio

from medtl._logutil import quiet_logger
from medtl.errors import CorruptFileError, ScanError
from medtl.io import limits
from medtl.io.guard import guarded
from medtl.io.scan import Scan, count_non_finite


#: Most decoded bytes a PNG or JPEG file can hold per byte: deflate's best case is 1032:1 (a JPEG's
#: is far lower), so a header claiming more than this is truncated or forged.
_MAX_INFLATION = 1100


def _quiet_tifffile() -> contextlib.AbstractContextManager[None]:
    """tifffile's log lines silenced: it logs what it finds wrong in a file (a circular IFD chain, a bad
    offset) straight to stderr, beside medtl's one-line error or result."""
    return quiet_logger("tifffile", logging.CRITICAL)


def check_image_claims(path: Path) -> None:
    """Refuse an image whose header claims more pixels than the limits, reading the header only.

    PIL reads PNG/JPEG/BMP/TIFF headers lazily (``Image.open`` decodes nothing); TIFFs PIL
    cannot open are measured with tifffile, which also reads headers only.
    """
    from PIL import Image

    # The header is read with PIL's own bomb guard off (medtl's check below names the claim);
    # afterwards the guard follows medtl's limit for the decode (process-wide, as PIL has it).
    width = height = frames = bands = None
    compressed = False
    try:
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limits.current().max_frame_pixels
        with im:
            width, height = im.size
            frames = int(getattr(im, "n_frames", 1) or 1)
            bands = len(im.getbands())
            itemsize = 2 if im.mode.startswith("I;16") else 4 if im.mode in ("I", "F") else 1
            compressed = im.format in ("PNG", "JPEG")
    except Image.DecompressionBombError as exc:
        raise limits.LimitError(path, f"image header claims too many pixels ({exc})",
                                "a damaged or crafted file; if real, raise MEDTL_MAX_FRAME_PIXELS") from None
    except Exception:  # noqa: BLE001 - not a format PIL reads: try tifffile, else let the reader judge
        import tifffile

        try:
            with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, itemsize = tuple(int(s) for s in series.shape), series.dtype.itemsize
        except Exception:  # noqa: BLE001
            return
        if len(shape) < 2:
            return
        has_samples = len(shape) >= 3 and shape[-1] in (3, 4)
        height, width = (shape[-3], shape[-2]) if has_samples else (shape[-2], shape[-1])
        bands = shape[-1] if has_samples else 1
        frames = int(np.prod(shape[: -3 if has_samples else -2], dtype=object)) if len(shape) > 2 + has_samples else 1
    decoded = limits.check_pixels(path, "image header claims", frames=frames, rows=height, cols=width,
                                  samples=bands, itemsize=itemsize)
    size = path.stat().st_size
    if compressed and decoded > _MAX_INFLATION * max(size, 1):
        # PIL fills what a cut or forged stream lacks with zeros or grey instead of failing
        raise CorruptFileError(path, f"image header claims {width} x {height} pixels ({limits.human_bytes(decoded)}) "
                               f"but the file holds {limits.human_bytes(size)}, more than PNG or JPEG can compress "
                               "(truncated or a forged header)", "re-export or re-download the file")


def _decode(path: Path) -> np.ndarray:
    """The pixels; a CMYK JPEG as the RGB picture its inks make (scikit-image returns the four ink
    values, whose first three read as RGB give a dark, wrongly coloured image). A multi-page TIFF is refused."""
    from PIL import Image

    with Image.open(path) as im:
        pages = int(getattr(im, "n_frames", 1) or 1)
        if im.format == "TIFF" and pages > 1:  # pages of different sizes: only the first would be read, silently
            raise ScanError(path, f"TIFF of {pages} pages is not a single 2D picture",
                            "save one page per file, or use NIfTI/DICOM for volumes")
        if im.mode == "CMYK":
            return np.asarray(im.convert("RGB"))
    with _quiet_tifffile():
        return np.asarray(skio.imread(str(path)))


#: What a plain picture does not say: its pixel size and which way the patient lies (the viewer draws no scale
#: bar and no orientation letters, ``medtl info`` says "unknown"; 1 mm and the identity affine are assumed).
NO_GEOMETRY = {"spacing_known": False, "spacing_note": "a plain picture has no pixel size, 1 mm assumed",
               "orientation_known": False}


@guarded
def read_image(path: str | os.PathLike, grayscale: bool = False) -> Scan:
    """Load a 2D image, keeping its bit depth (8 or 16 bit).

    The array is transposed to medtl's ``[i, j]`` order (``i`` along a row), as
    MONAI's image readers do, and gets a unit-spacing identity affine since a
    plain image carries no patient geometry. The header's pixel count is checked against
    :mod:`medtl.io.limits` before decoding. Colour stays RGB (alpha dropped)
    unless ``grayscale=True`` asks for its luminance.
    """
    path = Path(path)
    check_image_claims(path)
    try:
        data = _decode(path)
    except ScanError:
        raise
    except BaseException as exc:  # noqa: BLE001 - imageio/PIL/tifffile raise many types for damaged files
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise CorruptFileError(path, f"unreadable image ({type(exc).__name__}: {exc})",
                               "check the file is complete; re-export it") from None
    bad = count_non_finite(data)
    if bad:  # a float TIFF: as for DICOM and NIfTI, a NaN would come out as a NaN probability
        raise CorruptFileError(path, f"{bad} of {data.size} pixel values are not finite (NaN or infinite)",
                               "replace them (e.g. with the background value) and save the file again")
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = data[..., :3]
        scan = Scan(array=np.swapaxes(data, 0, 1)[:, :, None, :], affine=np.eye(4),
                    photometric="RGB", format="image", source=str(path), metadata=dict(NO_GEOMETRY))
        return scan.to_grayscale() if grayscale else scan
    if data.ndim == 3 and data.shape[-1] in (1, 2):  # gray, or gray + alpha (PNG "LA"): alpha dropped as for RGBA
        data = data[..., 0]
    if data.ndim != 2:
        raise ScanError(path, f"image of shape {data.shape} is not a single 2D picture",
                        "save one frame per file, or use NIfTI/DICOM for volumes")
    return Scan(array=data.T[:, :, None], affine=np.eye(4), photometric="MONOCHROME2",
                format="image", source=str(path), metadata=dict(NO_GEOMETRY))
