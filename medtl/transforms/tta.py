"""Test-time augmentation (TTA): a classifier's probabilities averaged over fixed, small versions of each input.

The views come from the training augmentation (:func:`tta_views`): the identity, then for each
spatial augmentation training used, the two views at :data:`TTA_EXTENT` of its range either way
(rotation, zoom, a shift along each axis) and the identity flipped along each trained flip axis.
A model trained to be invariant to those changes gets the same answer from every view in
principle; averaging removes part of the noise where it does not. The views are fixed (no random
draws), so a prediction is reproducible, and they are written into the model card so batch
scoring and the app average the same views as the run's evaluation.

By hand rather than MONAI's ``TestTimeAugmentation``: that one draws random invertible
transforms per item for segmentation uncertainty; here a batch of network inputs goes through a
handful of deterministic affine warps, one ``affine_grid``/``grid_sample`` call each (what
MONAI's ``Affine`` does per image).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from medtl.transforms.config import AugmentConfig

#: Where the views sit within each training range: 2/3 of the way out (rotation +-6.7 deg for a
#: training range of 10 deg), inside what the model saw, away from the range's rarely drawn edges.
TTA_EXTENT = 2 / 3


@dataclass(frozen=True)
class View:
    """One deterministic view: in-plane rotation (degrees), isotropic zoom (>1 enlarges), a shift per
    spatial axis in network layout (fraction of the size) and an optional flip axis."""

    rotate_deg: float = 0.0
    zoom: float = 1.0
    shift: tuple[float, ...] = field(default_factory=tuple)
    flip: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "View":
        return cls(rotate_deg=float(data.get("rotate_deg", 0.0)), zoom=float(data.get("zoom", 1.0)),
                   shift=tuple(float(s) for s in data.get("shift", ())), flip=data.get("flip"))

    @property
    def is_identity(self) -> bool:
        return self.rotate_deg == 0 and self.zoom == 1 and not any(self.shift) and self.flip is None


def tta_views(augment: AugmentConfig, spatial_dims: int) -> list[View]:
    """The identity first, then the views of each spatial augmentation ``augment`` trains with.

    Elastic deformation and the intensity (domain-shift) presets give no view: they imitate
    other scanners, not poses, and a fixed version of them would be an arbitrary choice.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    views = [View()]
    if augment.rotate_deg > 0:
        r = TTA_EXTENT * augment.rotate_deg
        views += [View(rotate_deg=-r), View(rotate_deg=r)]
    lo, hi = sorted(float(z) for z in augment.zoom)
    if (lo, hi) != (1.0, 1.0):
        views += [View(zoom=1 + TTA_EXTENT * (z - 1)) for z in (lo, hi) if z != 1.0]
    if augment.shift > 0:
        t = TTA_EXTENT * augment.shift
        for axis in range(spatial_dims):
            for sign in (-1, 1):
                shift = [0.0] * spatial_dims
                shift[axis] = sign * t
                views.append(View(shift=tuple(shift)))
    if augment.flip:
        axes = augment.flip_axes if augment.flip_axes is not None else [spatial_dims - 1]
        views += [View(flip=int(ax) % spatial_dims) for ax in axes]
    return views


def _theta(view: View, spatial_dims: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``affine_grid``'s output-to-input matrix; its coordinates run (x=W, y=H[, z=D]) in [-1, 1]."""
    a = math.radians(view.rotate_deg)
    c, s = math.cos(a) / view.zoom, math.sin(a) / view.zoom
    n = spatial_dims
    theta = torch.zeros(n, n + 1, dtype=torch.float64)
    theta[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)  # in-plane (H, W), as training rotates
    if n == 3:
        theta[2, 2] = 1 / view.zoom
    shift = list(view.shift) or [0.0] * n
    for axis, t in enumerate(shift):  # network axis (D,) H, W -> grid coordinate W, H(, D)
        theta[n - 1 - axis, n] = 2 * t
    return theta.to(dtype=dtype, device=device)


def apply_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """``view`` of a batch ``(N, C, H, W)`` or ``(N, C, D, H, W)``; out-of-image pixels repeat the border."""
    n = x.ndim - 2
    if n not in (2, 3):
        raise ValueError(f"apply_view wants a batch (N, C, H, W) or (N, C, D, H, W), got shape {tuple(x.shape)}")
    if view.shift and len(view.shift) != n:
        raise ValueError(f"view shifts {len(view.shift)} axes, the batch has {n} spatial axes")
    out = x
    if view.rotate_deg or view.zoom != 1 or any(view.shift):
        theta = _theta(view, n, x.dtype if x.is_floating_point() else torch.float32, x.device)
        grid = F.affine_grid(theta.expand(len(x), *theta.shape), list(x.shape), align_corners=False)
        out = F.grid_sample(x.float() if not x.is_floating_point() else x, grid, mode="bilinear",
                            padding_mode="border", align_corners=False)
    if view.flip is not None:
        out = torch.flip(out, dims=[2 + view.flip])
    return out


def tta_probabilities(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, views: Sequence[View],
                      logits: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax probabilities (float64) averaged over ``views`` of ``x``.

    ``logits``: the model's output for ``x`` itself when the caller has it already (the identity
    view is then not run again). Without views this is the plain softmax.
    """
    if not views:
        views = [View()]
    total = None
    for view in views:
        out = logits if (view.is_identity and logits is not None) else model(apply_view(x, view))
        p = torch.softmax(out.double(), dim=1)
        total = p if total is None else total + p
    return total / len(views)

