"""Input normalisation and first-conv adaptation rules (pure functions)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medtl.models import (
    GRAY_MEAN,
    GRAY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    adapt_input_conv,
    fold_gray_normalization,
    imagenet_normalize,
)


def test_imagenet_normalize_rgb_gray_and_3d():
    x = torch.rand(2, 3, 5, 6)
    y = imagenet_normalize(x)
    for c in range(3):
        assert torch.allclose(y[:, c], (x[:, c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    g = torch.rand(1, 1, 4, 5, 6)
    assert torch.allclose(imagenet_normalize(g), (g - GRAY_MEAN) / GRAY_STD)
    assert GRAY_MEAN == pytest.approx(0.449) and GRAY_STD == pytest.approx(0.226)
    u8 = torch.randint(0, 2, (1, 3, 4, 4), dtype=torch.uint8)
    assert imagenet_normalize(u8).dtype == torch.float32
    with pytest.raises(ValueError, match=r"uint8 tensor with values up to 255; scale it first \(e.g. x / 255"):
        imagenet_normalize(torch.full((1, 1, 4, 4), 255, dtype=torch.uint8))
    with pytest.raises(ValueError):
        imagenet_normalize(torch.rand(3, 4))


def test_adapt_input_conv_gray_is_kernel_sum_and_exact_on_raw_input():
    w = torch.randn(8, 3, 7, 7)
    w1 = adapt_input_conv(w, 1)
    g = torch.rand(2, 1, 20, 20)
    a = F.conv2d(g, w1, stride=2, padding=3)
    b = F.conv2d(g.repeat(1, 3, 1, 1), w, stride=2, padding=3)
    assert torch.allclose(a, b, atol=1e-5)


def test_adapt_input_conv_n_channels_timm_rule():
    w = torch.randn(4, 3, 3, 3)
    w5 = adapt_input_conv(w, 5)
    assert w5.shape == (4, 5, 3, 3)
    expected = torch.cat([w, w[:, :2]], dim=1) * (3 / 5)
    assert torch.equal(w5, expected)
    assert torch.equal(adapt_input_conv(w, 3), w)


@pytest.mark.parametrize("padding", [0, 3])
def test_gray_fold_is_exact_including_borders(padding):
    """W1 on gray-normalised g plus K0 on the in-image mask == RGB conv on normalised [g,g,g]."""
    w = torch.randn(6, 3, 7, 7)
    g = torch.rand(2, 1, 19, 23)
    w1, k0 = fold_gray_normalization(w)
    ones = torch.ones(1, 1, 19, 23)
    one_ch = F.conv2d(imagenet_normalize(g), w1, stride=2, padding=padding) + F.conv2d(
        ones, k0, stride=2, padding=padding
    )
    rgb = F.conv2d(imagenet_normalize(g.repeat(1, 3, 1, 1)), w, stride=2, padding=padding)
    assert torch.allclose(one_ch, rgb, atol=1e-5)
    if padding:
        # a single folded kernel (the offset as a constant bias) is wrong at the border:
        bias = k0.sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        biased = F.conv2d(imagenet_normalize(g), w1, stride=2, padding=padding) + bias
        assert not torch.allclose(biased, rgb, atol=1e-3)
