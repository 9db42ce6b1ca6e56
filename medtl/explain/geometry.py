"""Saliency of a whole scan, returned in the scan's own geometry.

The network sees the scan after preprocessing (3D: reoriented, resampled;
then resized), so its map lives on another grid. The map is brought back by
the affines, not by undoing each transform: MONAI's ``MetaTensor`` tracks the
affine of the processed grid through ``Orientationd``/``Spacingd``/``Resized``,
and every scan voxel centre is looked up at its world position in that grid.
The result has the scan's shape and *exactly* its affine (the very matrix, not a
recomputed one), so a saved NIfTI overlays the scan in any viewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage
from torch import nn

from medtl.errors import ArgumentError, ArgumentTypeError
from medtl.explain.saliency import DEFAULT_METHOD, explain
from medtl.io.scan import Scan
from medtl.transforms.layout import ToNetworkLayoutd, from_network_layout
from medtl.transforms.load import ScanSource, as_scan
from medtl.transforms.preprocessing import Preprocessing

#: Modality code of saliency scans (kept in the NIfTI header by ``save_nifti``).
SALIENCY_MODALITY = "SAL"


def prepare(prep: Preprocessing, scan_or_path: ScanSource) -> tuple[Scan, torch.Tensor, np.ndarray]:
    """``(scan, x, grid_affine)``: the scan, its network input, and the affine of the network's grid.

    ``x`` is exactly ``prep(scan)`` -- the same MONAI pipeline, run in two parts
    split before ``ToNetworkLayoutd`` so the ``MetaTensor`` in between can be
    read. ``grid_affine`` (4x4, RAS+ mm) maps voxel ``(i', j'[, k'])`` of that
    processed grid, in *scan* axis order, to the world; the network input is
    the same grid in network layout (:func:`medtl.transforms.layout.to_network_layout`).
    """
    scan = as_scan(scan_or_path, prep.spatial_dims)
    pipeline = prep.transforms()
    cut = next(i for i, t in enumerate(pipeline.transforms) if isinstance(t, ToNetworkLayoutd))
    head = pipeline({"image": scan}, end=cut)
    grid = head["image"]
    if not isinstance(grid, MetaTensor):
        raise TypeError("preprocessing lost the image geometry before the network layout step (no MetaTensor)")
    affine = np.asarray(grid.affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine on the processed image, got {affine.shape}")
    x = pipeline(head, start=cut)["image"]
    return scan, x, affine


def map_to_scan(saliency_map: np.ndarray, grid_affine: np.ndarray, scan: Scan, order: int = 1) -> np.ndarray:
    """Resample a network-layout map (``(H, W)`` or ``(D, H, W)``) onto the scan's voxels ``[i, j, k]``.

    Each scan voxel centre ``v`` is sent to the world (``scan.affine @ v``) and
    into the processed grid (``grid_affine^-1``), where the map is interpolated
    (``order`` 1: linear). Written with ``scipy.ndimage.affine_transform``
    because that call *is* this formula -- ``out[v] = map[M @ v + t]`` with
    ``M, t`` from ``inv(grid_affine) @ scan.affine`` -- with no resampling
    conventions (align-corners, normalised grids) to get wrong. Outside the
    processed grid (at most half a voxel at the border, since resizing and
    resampling keep the field of view) the nearest value is used.
    """
    m = np.asarray(saliency_map, dtype=np.float32)
    if m.ndim not in (2, 3):
        raise ArgumentError(f"saliency map must be (H, W) or (D, H, W), got shape {m.shape}")
    grid = from_network_layout(m[None], m.ndim)[0]
    if grid.ndim == 2:
        grid = grid[:, :, None]  # 2D: the slice axis k' = 0, as in the scan
    to_grid = np.linalg.inv(np.asarray(grid_affine, dtype=np.float64)) @ scan.affine
    out = ndimage.affine_transform(grid, to_grid[:3, :3], offset=to_grid[:3, 3], output_shape=scan.shape,
                                   order=order, mode="nearest")
    return np.clip(out, 0.0, 1.0).astype(np.float32) if order > 1 else out.astype(np.float32)


def saliency_for_scan(model: nn.Module, prep: Preprocessing, scan_or_path: ScanSource, method: str = DEFAULT_METHOD,
                      target: int | None = None, prepared: tuple[torch.Tensor, np.ndarray] | None = None,
                      **options: Any) -> tuple[Scan, dict[str, Any]]:
    """Saliency of a scan (path, :class:`Scan` or array) as a :class:`Scan` in the scan's own geometry.

    The map (float32 ``[0, 1]``, see :func:`medtl.explain.saliency`) has the
    scan's shape ``[i, j, k]`` and exactly its affine, modality ``"SAL"`` and a
    ``[0, 1]`` display window. ``options`` are the occlusion settings and ``progress`` of
    :func:`~medtl.explain.saliency`. The dict holds ``probabilities`` (list),
    ``target`` (class explained), ``predicted`` (argmax class) and ``method``.
    ``prepared``: ``(x, grid_affine)`` of :func:`prepare` for this scan (a :class:`Scan`), when the
    caller already preprocessed it (resizing a large image is the costly step).
    """
    if prepared is None:
        scan, x, grid_affine = prepare(prep, scan_or_path)
    elif isinstance(scan_or_path, Scan):
        scan, (x, grid_affine) = scan_or_path, prepared
    else:
        raise ArgumentTypeError("prepared= goes with the Scan it was prepared from")
    result = explain(model, x, method, target, **options)
    values = map_to_scan(result.map, grid_affine, scan)
    meta = {"saliency_method": method, "saliency_target": result.target, "window_center": 0.5, "window_width": 1.0}
    out = Scan(array=values, affine=scan.affine.copy(), modality=SALIENCY_MODALITY, format="saliency",
               source=scan.source, metadata=meta)
    info = {
        "method": method,
        "target": result.target,
        "predicted": int(np.argmax(result.probabilities)),
        "probabilities": [float(p) for p in result.probabilities],
    }
    return out, info
