"""Loading any scan source into a channel-first MONAI ``MetaTensor``."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medtl.errors import ConfigError, DimensionError, ScanError
from medtl.io.scan import Scan
from medtl.transforms.layout import array_to_scan

ScanSource = str | os.PathLike | Scan | np.ndarray
#: Longest side / shortest side of a 2D image a model accepts (panoramic dental X-rays are about 2.5).
MAX_ASPECT = 64


def as_scan(x: ScanSource, spatial_dims: int | None = None) -> Scan:
    """A :class:`Scan` from a path (``medtl.io.load_scan``), a Scan, or a raw array (:func:`array_to_scan`)."""
    if isinstance(x, Scan):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biufc":  # e.g. a list of file names made an array: not pixel values
            raise ScanError(None, f"in-memory array of {x.dtype.name} {x.shape}, not pixel values",
                            "give one path, a Scan or a numeric array; for a series of files, their folder or .zip")
        if x.dtype.kind in "fc" and not np.isfinite(x).all():
            # the file readers refuse these too: NaN would reach the network and make every output NaN
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            raise ScanError(None, f"in-memory array: {bad} of {x.size} values are not finite (NaN or infinite)",
                            "replace them (e.g. with the background value)")
        try:
            return array_to_scan(x, spatial_dims=spatial_dims)
        except ValueError as exc:
            raise ScanError(None, f"in-memory array: {exc}", "give (H, W), (H, W, 3) or (D, H, W)") from None
    if isinstance(x, (str, os.PathLike)):
        from medtl.io import load_scan

        return load_scan(x)  # as given: Path("") would be the current folder
    raise TypeError(f"cannot load a scan from {type(x).__name__}; give a path, a Scan or a numpy array")


def _describe(scan: Scan) -> str:
    return scan.source or "in-memory array"


class LoadScan(Transform):
    """Path | Scan | array -> ``MetaTensor`` ``(C, i, j, k)`` (or ``(C, i, j)`` when ``spatial_dims=2``).

    Channels: a gray scan gives 1 channel; a colour scan gives its 3 RGB
    channels, or its luminance (ITU-R BT.601) when ``grayscale=True`` (what
    :class:`~medtl.transforms.Preprocessing` asks for when the model takes 1
    channel). Values become float32; the original dtype is kept in the meta.

    ``spatial_dims`` checks the scan fits the model: a 2D model given a volume
    (more than one slice) or a 3D model given a single image is a
    :class:`~medtl.errors.ScanError` naming the file (no silent middle-slice
    choice: which slice matters is a clinical decision). For 2D the slice axis
    is dropped.

    Meta keys: ``affine`` (4x4, RAS+ mm), ``filename_or_obj``, ``modality``,
    ``photometric``, ``window`` (file's ``[center, width]`` or ``None``),
    ``spacing``, ``source_dtype``, ``spatial_shape``.
    """

    def __init__(self, spatial_dims: int | None = None, grayscale: bool = False) -> None:
        if spatial_dims not in (None, 2, 3):
            raise ConfigError(f"spatial_dims={spatial_dims!r} (preprocess.spatial_dims): use 2, 3 or None")
        self.spatial_dims = spatial_dims
        self.grayscale = grayscale

    def __call__(self, x: ScanSource) -> MetaTensor:
        scan = as_scan(x, self.spatial_dims)
        if self.spatial_dims == 2 and not scan.is_2d:
            raise DimensionError(_describe(scan), f"a volume with {scan.shape[2]} slices was given to a 2D model",
                            "use a 3D model (preprocess.spatial_dims: 3) or export the slice to classify")
        if self.spatial_dims == 3 and scan.is_2d:
            raise DimensionError(_describe(scan), "a single 2D image was given to a 3D model",
                            "use a 2D model (preprocess.spatial_dims: 2) or give the whole volume")
        if self.spatial_dims == 2 and max(scan.shape[:2]) > MAX_ASPECT * min(scan.shape[:2]):
            # resizing one to the network's square input would take minutes (the anti-aliasing
            # kernel grows with the scale factor): a 58 KB PNG of 1 x 60,000,000 pixels did
            raise ScanError(_describe(scan), f"image of {scan.shape[0]} x {scan.shape[1]} pixels, one side over "
                            f"{MAX_ASPECT} times the other, which no scan has (a damaged or forged file?)",
                            "crop it to the region to classify, or re-export it")
        source_dtype = str(scan.array.dtype)
        if self.grayscale:
            scan = scan.to_grayscale()
        arr = np.asarray(scan.array, dtype=np.float32)
        arr = np.moveaxis(arr, 3, 0) if arr.ndim == 4 else arr[None]
        if self.spatial_dims == 2:
            arr = arr[..., 0]
        window = scan.default_window
        meta: dict[str, Any] = {
            "filename_or_obj": scan.source,
            "modality": scan.modality,
            "photometric": scan.photometric,
            "window": list(window) if window else None,
            "spacing": list(scan.spacing),
            "source_dtype": source_dtype,
            "spatial_shape": list(scan.shape),
        }
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)), affine=torch.as_tensor(scan.affine),
                          meta=meta)


class LoadScand(MapTransform):
    """Dictionary wrapper of :class:`LoadScan`: ``d[key]`` (path, Scan or array) -> ``MetaTensor``."""

    def __init__(self, keys: KeysCollection, spatial_dims: int | None = None, grayscale: bool = False,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadScan(spatial_dims=spatial_dims, grayscale=grayscale)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
