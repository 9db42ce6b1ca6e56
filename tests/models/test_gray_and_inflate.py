"""Exactness of the grayscale stem and of 2D -> 3D inflation, for every architecture."""

from __future__ import annotations

import pytest
import torch

from medtl import models
from medtl.models.adapt import adapt_input_conv

from .conftest import ARCHS, fake, loaded, rel_err


@pytest.mark.parametrize("arch", ARCHS)
def test_gray_sum_rule_matches_rgb_on_replicated_input(arch):
    """model_1ch(g) == model_3ch(cat[g,g,g]) with the raw kernel-sum rule (same weights)."""
    m3 = loaded(arch)
    sd = m3.state_dict()
    sd[m3.stem_conv_key] = adapt_input_conv(sd[m3.stem_conv_key], 1)
    m1 = models.create(arch, in_channels=1)
    sd["gray_offset"] = torch.zeros_like(m1.gray_offset)
    m1.load_state_dict(sd)
    m1.eval()
    g = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert rel_err(m1(g), m3(g.repeat(1, 3, 1, 1))) < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_gray_imagenet_adaptation_is_exact_with_normalisation(arch):
    """create(in_channels=1) + imagenet_normalize(g) == RGB net on imagenet_normalize([g,g,g])."""
    m1, m3 = loaded(arch, in_channels=1), loaded(arch)
    assert m1.card["input_adaptation"].startswith("gray-exact")
    g = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        a = m1(models.imagenet_normalize(g))
        b = m3(models.imagenet_normalize(g.repeat(1, 3, 1, 1)))
    assert rel_err(a, b) < 1e-5
    assert torch.allclose(m1.preprocess(g), models.imagenet_normalize(g))


def _depth_constant_pair(arch, inflate, depth, in_channels=1):
    m2 = loaded(arch, in_channels=in_channels, num_classes=None)
    m3 = loaded(arch, in_channels=in_channels, num_classes=None, spatial_dims=3, inflate=inflate)
    x = models.imagenet_normalize(torch.rand(1, in_channels, 32, 32))
    with torch.no_grad():
        return m2(x), m3(x.unsqueeze(2).repeat(1, 1, depth, 1, 1))


# (arch, smallest convenient depth): DenseNet's three transitions and EfficientNet's static
# 'same' padding (5-tap depthwise convs) need a few slices left after the stem.
DEPTHS = {"resnet18": 4, "resnet34": 4, "resnet50": 4, "densenet121": 8, "efficientnet_lite0": 16}


@pytest.mark.parametrize("arch", ARCHS)
def test_i3d_with_replicate_depth_padding_is_exact(arch):
    f2, f3 = _depth_constant_pair(arch, {"mode": "i3d", "depth_padding": "replicate",
                                          "pool_depth_early": False}, DEPTHS[arch])
    assert rel_err(f3, f2) < 1e-5


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "efficientnet_lite0"])
def test_central_inflation_is_exact_with_zero_padding(arch):
    f2, f3 = _depth_constant_pair(arch, {"mode": "central", "pool_depth_early": False}, DEPTHS[arch])
    assert rel_err(f3, f2) < 1e-5


@pytest.mark.parametrize("stem_depth,early", [(1, True), (3, False), (7, True)])
def test_stem_options_keep_exactness_and_shapes(stem_depth, early):
    cfg = {"mode": "i3d", "depth_padding": "replicate", "stem_depth": stem_depth, "pool_depth_early": early}
    f2, f3 = _depth_constant_pair("resnet18", cfg, 8, in_channels=3)
    assert rel_err(f3, f2) < 1e-5
    m = models.create("resnet18", spatial_dims=3, inflate=cfg)
    assert m.net.conv1.weight.shape == (64, 3, stem_depth, 7, 7)
    assert m.net.conv1.stride == ((2 if early else 1), 2, 2)
    assert m.net.maxpool.stride in ((2 if early else 1, 2, 2), 2)


def test_zero_padded_i3d_is_not_exact_at_depth_borders():
    """The documented caveat: plain I3D mixes padded zeros into the first/last slices."""
    f2, f3 = _depth_constant_pair("resnet18", "i3d", 4)
    assert rel_err(f3, f2) > 1e-2


def test_inflated_kernels_i3d_and_central():
    w = torch.randn(4, 2, 3, 3)
    i3d = models.inflate_kernel(w, 3, "i3d")
    assert torch.allclose(i3d.sum(dim=2), w) and torch.allclose(i3d[:, :, 0], w / 3)
    c = models.inflate_kernel(w, 3, "central")
    assert torch.equal(c[:, :, 1], w) and c[:, :, 0].abs().sum() == 0
    with pytest.raises(ValueError):
        models.inflate_kernel(w, 3, "acs")


def test_inflate_modes_are_pluggable():
    @models.register_inflation("first_slice_test")
    def _first(kernel, depth):
        out = kernel.new_zeros(kernel.shape[:2] + (depth,) + kernel.shape[2:])
        out[:, :, 0] = kernel
        return out

    assert "first_slice_test" in models.list_inflations()
    m = models.create("resnet18", spatial_dims=3, inflate="first_slice_test", num_classes=None)
    models.load_pretrained(m, fake("resnet18"))
    assert m.card["inflate"]["mode"] == "first_slice_test"
    assert m.net.layer1[0].conv1.weight[:, :, 1:].abs().sum() == 0
