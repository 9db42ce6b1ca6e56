"""Input adaptation: ImageNet normalisation and first-conv kernels for 1 or N channels.

Pure functions over tensors (timm's ``adapt_input_conv`` style), so the rules are
testable on their own and reused by :func:`medtl.models.create`.

The exact grayscale rule
------------------------
An ImageNet network sees ``x_c = (v_c - m_c) / s_c`` for RGB values ``v_c`` in [0, 1].
For a gray image replicated to RGB (``v_c = g``) the first convolution computes, per
kernel tap ``t`` inside the image (zero padding contributes nothing)::

    sum_c w_c[t] (g - m_c) / s_c  =  W1[t] (g - m) / s  +  K0[t]

with the one-channel input normalised by the gray constants ``m, s``
(:data:`GRAY_MEAN`, :data:`GRAY_STD`) and

    W1 = s * sum_c w_c / s_c          (the trainable 1-channel kernel)
    K0 = sum_c w_c (m - m_c) / s_c    (a fixed kernel applied to the in-image mask)

No single kernel can absorb ``K0``: the ratio of the two terms changes from tap to tap,
and at the image border the zero padding removes different taps, so folding ``K0`` into
a bias is exact only away from the border. medtl keeps ``K0`` as a buffer
(``Backbone.gray_offset``) and adds ``conv(mask, K0)`` to the stem output, which makes
``model_1ch(imagenet_normalize(g)) == model_3ch(imagenet_normalize(cat[g, g, g]))``
hold at every pixel, border included.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

#: torchvision's ImageNet statistics for RGB in [0, 1].
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: One-channel constants: the means of the RGB values (timm's convention for 1 channel).
GRAY_MEAN: float = sum(IMAGENET_MEAN) / 3
GRAY_STD: float = sum(IMAGENET_STD) / 3


def channel_stats(
    in_channels: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[list[float], list[float]]:
    """Per-channel ``(mean, std)`` for ``in_channels`` inputs.

    1 channel: the gray constants (mean of the RGB values); 3: RGB; N: RGB cycled
    (channel ``i`` uses RGB channel ``i % 3``, matching :func:`adapt_input_conv`'s
    repeat rule).
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    return [float(mean[i % 3]) for i in range(in_channels)], [float(std[i % 3]) for i in range(in_channels)]


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean[c]) / std[c]`` along channel dim 1 of a ``(B, C, *spatial)`` tensor."""
    x = torch.as_tensor(x)
    if x.ndim < 3:
        raise ValueError(f"expected a (B, C, *spatial) tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != len(mean):
        raise ValueError(f"tensor has {x.shape[1]} channels, normalisation has {len(mean)}")
    if not x.is_floating_point():
        if x.numel() and int(x.max()) > 1:  # a 0..255 image would reach the network at values up to 1126
            raise ValueError(f"expected an image in [0, 1], got a {str(x.dtype).replace('torch.', '')} tensor with "
                             f"values up to {int(x.max())}; scale it first (e.g. x / 255 for 8-bit)")
        x = x.float()
    view = (1, -1) + (1,) * (x.ndim - 2)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(view)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(view)
    return (x - m) / s


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] images ``(B, C, H, W)`` or ``(B, C, D, H, W)`` to ImageNet network input.

    3 channels: per-channel ImageNet mean/std. 1 channel: ``(g - GRAY_MEAN) / GRAY_STD``,
    which together with medtl's folded gray stem (see module docstring) gives exactly the
    activations of the RGB network on ``cat([g, g, g])``. N channels: RGB statistics cycled.
    """
    mean, std = channel_stats(int(torch.as_tensor(x).shape[1]))
    return normalize(x, mean, std)


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt an RGB first-conv kernel ``(O, 3, *k)`` to ``in_channels`` inputs (raw rule).

    1 channel: the sum of the RGB kernels, so ``conv(g)`` equals the RGB conv on
    ``cat([g, g, g])`` for the same (un-normalised) input. N channels (timm's rule):
    repeat the RGB kernels ``ceil(N / 3)`` times, keep the first N, scale by ``3 / N``
    so the activation magnitude stays that of the RGB network on average.
    """
    if weight.shape[1] != 3:
        raise ValueError(f"expected an RGB kernel with 3 input channels, got {tuple(weight.shape)}")
    if in_channels == 3:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = [1] * weight.ndim
    reps[1] = math.ceil(in_channels / 3)
    return weight.repeat(*reps)[:, :in_channels] * (3.0 / in_channels)


def fold_gray_normalization(
    weight: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact 1-channel version of an RGB stem kernel for gray-normalised input.

    Returns ``(W1, K0)`` as in the module docstring: ``W1`` convolves
    ``(g - gray_mean) / gray_std``; ``K0`` convolves the in-image mask (ones, zero padded).
    """
    if weight.shape[1] != 3:
        raise ValueError(f"expected an RGB kernel with 3 input channels, got {tuple(weight.shape)}")
    view = (1, 3) + (1,) * (weight.ndim - 2)
    m = torch.tensor(mean, dtype=weight.dtype).view(view)
    s = torch.tensor(std, dtype=weight.dtype).view(view)
    gray_mean, gray_std = sum(mean) / 3, sum(std) / 3
    w1 = gray_std * (weight / s).sum(dim=1, keepdim=True)
    k0 = (weight * (gray_mean - m) / s).sum(dim=1, keepdim=True)
    return w1, k0
