"""The Gaussian anti-aliasing MONAI's ``Resize(anti_aliasing=True)`` applies before shrinking, in bounded memory.

MONAI filters with one ``conv3d``/``conv2d`` per axis, which on a CPU unfolds the whole volume times the
kernel length: a 512 x 512 x 600 CT shrunk to 16 x 32 x 32 asked for 53 GB (kernels of 61-147 taps), a
512 x 512 x 100 one peaked at 3.9 GB. :class:`AntiAliasd` computes the same filter (MONAI's sigma rule and
``gaussian_1d`` kernels, zero padding) one axis at a time over slabs of rows whose unfolded size is capped,
so the memory is a few copies of the image whatever its size; ``Resized`` then runs without its own filter.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import MapTransform

#: Bytes the unfolded input of one slab of rows may take (the convolution's working memory).
SLAB_BYTES = 64 << 20


def antialias_sigmas(in_size: Sequence[int], out_size: Sequence[int]) -> list[float]:
    """MONAI's (and scikit-image's) default anti-aliasing sigma per axis: ``max(0, (in/out - 1) / 2)``."""
    return [max(0.0, (float(i) / float(o) - 1.0) / 2.0) for i, o in zip(in_size, out_size)]


def smooth_axis(img: torch.Tensor, axis: int, sigma: float) -> torch.Tensor:
    """``img`` filtered along ``axis`` with MONAI's erf Gaussian of ``sigma`` (4 sigma, zero padding),
    in slabs of rows so that no more than :data:`SLAB_BYTES` is unfolded at once."""
    kernel = gaussian_1d(sigma, truncated=4.0, approx="erf").to(img.dtype).view(1, 1, -1)
    rows = img.movedim(axis, -1)
    shape = rows.shape
    flat = rows.reshape(-1, 1, shape[-1])
    out = torch.empty_like(flat)
    step = max(1, SLAB_BYTES // (shape[-1] * kernel.shape[-1] * flat.element_size()))
    pad = (kernel.shape[-1] - 1) // 2
    for start in range(0, flat.shape[0], step):
        out[start:start + step] = torch.nn.functional.conv1d(flat[start:start + step], kernel, padding=pad)
    return out.view(shape).movedim(-1, axis)


class AntiAliasd(MapTransform):
    """The Gaussian filter ``Resized(spatial_size, anti_aliasing=True)`` would apply to a channel-first
    image it shrinks, computed axis by axis in bounded memory (put ``Resized(anti_aliasing=False)`` after
    it); an image that is not shrunk along any axis passes unchanged, as in MONAI."""

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int]) -> None:
        super().__init__(keys)
        self.spatial_size = [int(s) for s in spatial_size]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            spatial = list(img.shape[1:])
            if not any(o < i for o, i in zip(self.spatial_size, spatial)):
                continue
            out = torch.as_tensor(img.as_tensor() if isinstance(img, MetaTensor) else img, dtype=torch.float32)
            for axis, sigma in enumerate(antialias_sigmas(spatial, self.spatial_size)):
                if sigma > 0:  # MONAI's kernel for sigma 0 is the identity [0, 1, 0]
                    out = smooth_axis(out, axis + 1, sigma)
            if isinstance(img, MetaTensor):
                out = MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
            d[key] = out
        return d
