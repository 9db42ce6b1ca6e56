"""ACS convolutions (inflate="acs"): kernels kept exactly, planes right, layer exact, and every
adaptation of every architecture trains on a small volume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medtl import models
from medtl.models.acs import ACSConv3d, acs_kernel, acs_split
from medtl.models.inflate import DepthReplicateConv3d

from .conftest import ARCHS, loaded, rel_err


def test_split_rule_matches_acsconv_and_respects_groups():
    assert acs_split(64) == (22, 21, 21)
    assert acs_split(32) == (11, 11, 10)
    assert acs_split(3) == (1, 1, 1)
    assert acs_split(2) == (1, 1, 0)
    assert acs_split(6) == (2, 2, 2)


@pytest.mark.parametrize("arch", ARCHS)
def test_acs_keeps_every_imagenet_kernel_exactly(arch):
    """Each ACS parameter is the 2D (gray-folded) ImageNet kernel, and its dense 3D kernel,
    viewed in its own plane, equals that 2D kernel (zeros off the plane)."""
    m2 = loaded(arch, in_channels=1)
    m3 = loaded(arch, in_channels=1, spatial_dims=3, inflate="acs")
    sd2, sd3 = m2.state_dict(), m3.state_dict()
    convs = {name: mod for name, mod in m3.named_modules() if isinstance(mod, ACSConv3d)}
    assert convs and not any(isinstance(m, torch.nn.Conv3d) for m in m3.modules())
    for name, conv in convs.items():
        w2 = sd2[name + ".weight"]
        assert torch.equal(sd3[name + ".weight"], w2), name
        dense = conv.dense_kernel()
        k, mid = w2.shape[-1], w2.shape[-1] // 2
        assert dense.shape == w2.shape[:2] + (k, k, k)
        a, c, s = conv.split
        assert a + c + s == w2.shape[0] and a >= c >= s
        views = [dense[:a, :, mid], dense[a:a + c, :, :, mid], dense[a + c:, :, :, :, mid]]
        for view, w in zip(views, (w2[:a], w2[a:a + c], w2[a + c:])):
            assert torch.equal(view, w), name
        if k > 1:
            assert float(dense.detach().abs().sum()) == pytest.approx(float(w2.abs().sum()), rel=1e-6)
    assert torch.equal(sd3["gray_offset"], sd2["gray_offset"])


def test_groups_apply_their_kernels_in_the_right_plane():
    """Axial channels = the 2D conv on each (H, W) slice; coronal on each (D, W) plane;
    sagittal on each (D, H) plane."""
    conv = ACSConv3d(2, 6, 3, padding=(1, 1, 1), bias=True)
    x = torch.randn(1, 2, 5, 6, 7)
    y = conv(x)
    w, b = conv.weight, conv.bias
    for z in range(5):
        assert torch.allclose(y[:, 0:2, z], F.conv2d(x[:, :, z], w[0:2], b[0:2], padding=1), atol=1e-5)
    for h in range(6):
        assert torch.allclose(y[:, 2:4, :, h], F.conv2d(x[:, :, :, h], w[2:4], b[2:4], padding=1), atol=1e-5)
    for col in range(7):
        assert torch.allclose(y[:, 4:6, :, :, col], F.conv2d(x[..., col], w[4:6], b[4:6], padding=1), atol=1e-5)


@pytest.mark.parametrize("cin, cout, k, stride, padding, dilation, groups", [
    (4, 7, 3, 1, 1, 1, 1),
    (3, 8, 7, 2, 3, 1, 1),
    (5, 6, 3, (1, 2, 2), (0, 1, 1), 1, 1),
    (4, 5, 3, 1, 2, 2, 1),
    (6, 6, 5, 2, 2, 1, 6),   # depthwise, strided
    (6, 12, 3, 1, 0, 1, 3),  # grouped
    (4, 4, 1, 2, 0, 1, 1),
])
def test_layer_equals_dense_conv3d(cin, cout, k, stride, padding, dilation, groups):
    t3 = lambda v: (v,) * 3 if isinstance(v, int) else v
    conv = ACSConv3d(cin, cout, k, t3(stride), t3(padding), t3(dilation), groups, bias=True)
    x = torch.randn(2, cin, 9, 10, 11)
    ref = F.conv3d(x, conv.dense_kernel(), conv.bias, conv.stride, conv.padding, conv.dilation, groups)
    assert conv(x).shape == ref.shape
    assert rel_err(conv(x), ref) < 1e-5


def test_layer_keeps_depth_replicate_padding():
    src = DepthReplicateConv3d(3, 6, 3, padding=1, bias=False)
    conv = ACSConv3d.from_conv(src)
    assert conv.depth_replicate and conv.padding == (1, 1, 1)
    src.weight.data.copy_(conv.dense_kernel())
    x = torch.randn(1, 3, 6, 7, 8)
    assert rel_err(conv(x), src(x)) < 1e-5


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_lite0"])
def test_network_equals_plain_conv3d_network_with_dense_kernels(arch):
    """The whole ACS network (incl. EfficientNet's asymmetric static padding and the gray
    stem offset) equals the ordinary 3D network holding the dense ACS kernels."""
    geometry = {"pool_depth_early": False}
    acs = loaded(arch, in_channels=1, spatial_dims=3, num_classes=None, inflate={"mode": "acs", **geometry})
    plain = models.create(arch, in_channels=1, spatial_dims=3, num_classes=None,
                          inflate={"mode": "central", **geometry})
    sd = dict(acs.state_dict())
    stem = acs.stages[0][1][0]
    for name, mod in acs.named_modules():
        if isinstance(mod, ACSConv3d):
            sd[name + ".weight"] = mod.dense_kernel()
    sd["gray_offset"] = stem.dense_kernel(acs.gray_offset)
    plain.load_state_dict(sd)
    plain.eval()
    x = models.imagenet_normalize(torch.rand(1, 1, 16, 32, 32))
    with torch.no_grad():
        assert rel_err(acs(x), plain(x)) < 1e-4


def test_acs_is_structural_not_a_kernel_inflation():
    w = torch.randn(5, 2, 3, 3)
    dense = acs_kernel(w)
    assert dense.shape == (5, 2, 3, 3, 3) and torch.equal(dense[:2, :, 1], w[:2])
    with pytest.raises(ValueError):
        models.inflate_kernel(w, 3, "acs")  # ACS layers keep 2D kernels: nothing to inflate
    with pytest.raises(ValueError, match="square"):
        acs_kernel(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match="stem_depth"):
        models.create("resnet18", spatial_dims=3, inflate={"mode": "acs", "stem_depth": 1})


def test_acs_card_round_trip_and_2d_gradients():
    m = loaded("resnet18", in_channels=1, spatial_dims=3, num_classes=2, inflate="acs")
    assert m.card["inflate"]["mode"] == "acs"
    again = models.create("resnet18", in_channels=1, spatial_dims=3, num_classes=2, inflate=m.card["inflate"])
    again.load_state_dict(m.state_dict())  # strict
    again.eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x), m(x))
    m.train()
    m(x).sum().backward()
    conv1 = m.net.conv1
    assert conv1.weight.grad is not None and conv1.weight.grad.ndim == 4


# Smallest volume each architecture accepts: DenseNet-121 and EfficientNet-Lite0 need 32 px
# in-plane (also in 2D: five stride-2 stages, static 'same' padding) and depth kept early.
SMALL = {"resnet18": (16, 16, 16), "resnet34": (16, 16, 16), "resnet50": (16, 16, 16),
         "densenet121": (16, 32, 32), "efficientnet_lite0": (16, 32, 32)}


@pytest.mark.parametrize("mode", ["i3d", "central", "acs", "2.5d"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_adaptation_builds_and_trains(arch, mode):
    inflate = {"mode": mode} if mode == "2.5d" else {"mode": mode, "pool_depth_early": arch.startswith("resnet")}
    model = models.create(arch, in_channels=1, spatial_dims=3, num_classes=2, inflate=inflate)
    x = torch.randn(2, 1, *SMALL[arch])
    out = model(x)
    assert out.shape == (2, 2)
    F.cross_entropy(out, torch.tensor([0, 1])).backward()
    stage_params = {id(p) for _, s in model.stages for p in s.parameters()}
    for name, p in model.named_parameters():
        assert id(p) in stage_params, name
        assert p.grad is not None, name
