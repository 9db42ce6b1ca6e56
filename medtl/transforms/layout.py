"""Axis conventions between scans and networks.

A :class:`~medtl.io.Scan` is indexed ``[i, j, k]`` (``i`` along a row). Networks
see the reversed spatial order: 2D ``(C, H=j, W=i)``, 3D ``(C, D=k, H=j, W=i)``.
So a natural picture stored as ``(rows, cols)`` reaches the network exactly as it
was drawn, and 3D networks slide along slices on their depth axis (the temporal
axis of I3D inflation). Saliency maps go back to scan geometry with
:func:`from_network_layout`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medtl.io.scan import Scan

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _reverse_spatial(x: ArrayT, spatial_dims: int) -> ArrayT:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if x.ndim != spatial_dims + 1:
        raise ValueError(f"expected a channel-first array with {spatial_dims} spatial axes, got shape {tuple(x.shape)}")
    order = (0,) + tuple(range(spatial_dims, 0, -1))
    if isinstance(x, torch.Tensor):
        return x.permute(*order)
    return np.transpose(x, order)


def to_network_layout(x: ArrayT, spatial_dims: int) -> ArrayT:
    """Channel-first scan order ``(C, i, j[, k])`` -> network order ``(C, [k,] j, i)``.

    A view (no copy) of a numpy array or torch tensor.
    """
    return _reverse_spatial(x, spatial_dims)


def from_network_layout(x: ArrayT, spatial_dims: int) -> ArrayT:
    """Network order ``(C, [D,] H, W)`` -> scan order ``(C, i=W, j=H[, k=D])``; inverse of :func:`to_network_layout`."""
    return _reverse_spatial(x, spatial_dims)


def array_to_scan(arr: np.ndarray, spatial_dims: int | None = None, modality: str = "OT",
                  source: str = "") -> Scan:
    """Wrap a raw array in network-like order (as in MedMNIST) as a :class:`Scan`.

    ``(H, W)`` -> 2D gray scan ``[i=W, j=H]`` (like :func:`medtl.io.image2d.read_image`),
    ``(H, W, 3|4)`` -> 2D RGB scan (alpha dropped), ``(D, H, W)`` -> volume ``[i=W, j=H, k=D]``.
    Identity affine, so network layout gives the original array back. A 3D array
    whose last axis has 3 or 4 entries is read as colour unless ``spatial_dims=3``.
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1 and spatial_dims != 3:
        arr = arr[..., 0]
    if arr.ndim == 2:
        if spatial_dims == 3:
            raise ValueError(f"a 2D array of shape {arr.shape} cannot be a 3D volume")
        return Scan(array=arr.T[:, :, None], affine=np.eye(4), modality=modality, format="array", source=source)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and spatial_dims != 3:
        rgb = np.swapaxes(arr[..., :3], 0, 1)[:, :, None, :]
        return Scan(array=rgb, affine=np.eye(4), modality=modality, photometric="RGB", format="array",
                    source=source)
    if arr.ndim == 3:
        if spatial_dims == 2:
            raise ValueError(f"array of shape {arr.shape} is a volume (D, H, W), not a 2D image")
        return Scan(array=arr.transpose(2, 1, 0), affine=np.eye(4), modality=modality, format="array",
                    source=source)
    raise ValueError(f"array of shape {arr.shape} is not (H, W), (H, W, 3) or (D, H, W)")


class ToNetworkLayout(Transform):
    """Array transform form of :func:`to_network_layout`; a ``MetaTensor``'s affine follows the axes."""

    def __init__(self, spatial_dims: int) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        out = to_network_layout(img, self.spatial_dims)
        if isinstance(out, MetaTensor):
            affine = out.affine.clone()
            n = self.spatial_dims
            affine[:, :n] = affine[:, :n].flip(-1)
            out = out.contiguous()
            out.affine = affine
        elif isinstance(out, torch.Tensor):
            out = out.contiguous()
        else:
            out = np.ascontiguousarray(out)
        return out


class ToNetworkLayoutd(MapTransform):
    """Dictionary wrapper of :class:`ToNetworkLayout`."""

    def __init__(self, keys: KeysCollection, spatial_dims: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ToNetworkLayout(spatial_dims)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d
