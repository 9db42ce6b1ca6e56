"""Does a saliency map point at the lesion? Scores against lesion masks, and the model card's entry.

- :func:`pointing_hit`: the map's maximum lies inside the mask dilated by ``dilate`` voxels;
- :func:`mass_inside`: share of the map's total inside the mask (a flat map gets the
  mask's area share, so ``mass / area share`` is the gain over no explanation);
- :func:`deletion_score`: mean probability of the explained class, relative to the
  intact input, after the most salient input voxels are replaced by a blurred copy
  (lower: the map found what the model uses);
- :func:`saliency_card`: the method and its measured pointing game, for the model card.

``benchmarks/saliency.py`` uses the same functions on every candidate method.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from medtl.errors import ArgumentError
from medtl.explain.saliency import CAM_STRIDES, DEFAULT_METHOD, METHOD_TITLES

#: Fractions of the input deleted by :func:`deletion_score`.
DELETION_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2)
#: Pointing-game tolerance: the lesion mask is dilated by this many voxels (of the scan grid).
POINTING_DILATION = 2


def method_title(method: str, stride: int | Sequence[int] | None = None) -> str:
    """``"LayerCAM, strides 8+16"``: the method's name for people, with the stages it uses."""
    title = METHOD_TITLES.get(method, method)
    if method not in CAM_STRIDES:
        return title
    strides = CAM_STRIDES[method] if stride is None else ([stride] if isinstance(stride, int) else list(stride))
    if strides is None:
        return f"{title}, last stage"
    return f"{title}, stride{'s' if len(strides) > 1 else ''} {'+'.join(str(s) for s in strides)}"


def _spatial_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask) > 0
    if not m.any():
        raise ArgumentError("the lesion mask is empty")
    return m


def pointing_hit(saliency_map: np.ndarray, mask: np.ndarray, dilate: int = POINTING_DILATION) -> bool:
    """True when the map's (first) maximum is inside ``mask`` dilated by ``dilate`` voxels.

    ``mask`` has the map's shape; a singleton axis (a 2D scan's ``k``) is not dilated along.
    """
    m = _spatial_mask(mask)
    sal = np.asarray(saliency_map)
    if sal.shape != m.shape:
        raise ArgumentError(f"map {sal.shape} and mask {m.shape} differ in shape")
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    for axis, n in enumerate(m.shape):
        if n == 1:
            structure = np.take(structure, [1], axis=axis)
    near = ndimage.binary_dilation(m, structure=structure, iterations=dilate) if dilate > 0 else m
    return bool(near.ravel()[int(np.argmax(np.nan_to_num(sal, nan=-np.inf)))])


def mass_inside(saliency_map: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (non-negative) map's total that lies inside ``mask``; 0 for an all-zero map."""
    m = _spatial_mask(mask)
    sal = np.clip(np.nan_to_num(np.asarray(saliency_map, dtype=np.float64)), 0.0, None)
    total = float(sal.sum())
    return float(sal[m].sum()) / total if total > 0 else 0.0


def deletion_score(model: nn.Module, x: torch.Tensor, saliency_map: np.ndarray, target: int,
                   fractions: Sequence[float] = DELETION_FRACTIONS) -> float:
    """Mean p(``target``) after deleting the top ``fractions`` of ``x`` (network layout, ``(C, ...)``)
    by ``saliency_map`` (``x.shape[1:]``), over p(``target``) of the intact input.

    Deleted voxels take the value of a Gaussian-blurred copy of ``x`` (sigma 1/16 of
    each side), which removes a small lesion without painting an edge or a flat patch.
    """
    spatial = tuple(x.shape[1:])
    sal = np.asarray(saliency_map)
    if sal.shape != spatial:
        raise ArgumentError(f"map {sal.shape} does not match the input's spatial shape {spatial}")
    xs = x.detach().float().cpu()
    blurred = torch.from_numpy(ndimage.gaussian_filter(xs.numpy(), [0] + [s / 16 for s in spatial])).float()
    order = np.argsort(-sal.ravel(), kind="stable")
    batch = [xs]
    for f in fractions:
        keep = np.ones(sal.size, np.float32)
        keep[order[: max(1, int(round(f * sal.size)))]] = 0.0
        k = torch.from_numpy(keep.reshape(spatial))[None]
        batch.append(xs * k + blurred * (1 - k))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = torch.softmax(model(torch.stack(batch).to(device)).float(), 1)[:, target].cpu().numpy()
    finally:
        model.train(was_training)
    return float(p[1:].mean() / max(float(p[0]), 1e-6))


def saliency_card(model: Any, preprocessing: Any, target: int,
                  cases: Iterable[tuple[str | os.PathLike, str | os.PathLike]],
                  method: str = DEFAULT_METHOD, split: str = "val") -> dict[str, Any]:
    """The model card's ``saliency`` entry: ``method`` and its pointing game on ``cases``.

    ``model`` and ``preprocessing``: the run's network and pipeline; ``target``: the class
    explained (the positive one); ``cases``: ``(scan path, lesion mask path)`` of positive
    studies (mask on the scan's voxel grid), e.g. the run's validation positives with masks.
    """
    from medtl.explain.geometry import map_to_scan, prepare
    from medtl.explain.saliency import explain
    from medtl.io import load_scan

    hits, masses, shares = [], [], []
    for scan_path, mask_path in cases:
        scan, x, grid = prepare(preprocessing, scan_path)
        mask = np.asarray(load_scan(mask_path).array) > 0
        if mask.shape != tuple(scan.shape):
            raise ArgumentError(f"{mask_path}: mask grid {mask.shape} is not the scan's {tuple(scan.shape)}")
        on_scan = map_to_scan(explain(model, x, method, target).map, grid, scan)
        hits.append(pointing_hit(on_scan, mask))
        masses.append(mass_inside(on_scan, mask))
        shares.append(float(mask.mean()))
    n = len(hits)
    return {
        "method": method,
        "title": method_title(method),
        "stride": None if CAM_STRIDES.get(method) is None else list(CAM_STRIDES[method]),
        "split": split,
        "n": n,
        "pointing_game": float(np.mean(hits)) if n else None,
        "mass_inside": float(np.mean(masses)) if n else None,
        "area_share": float(np.mean(shares)) if n else None,
        "measured_by": "medtl.explain.saliency_card (lesion masks, map maximum within 2 voxels of the lesion)",
    }
