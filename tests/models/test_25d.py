"""2.5D (inflate="2.5d"): slices with neighbours through the 2D ImageNet network, pooled over depth."""

from __future__ import annotations

import pytest
import torch

from medtl import models
from medtl.models.slices25d import SliceBackbone, SliceConfig

from .conftest import ARCHS, fake, loaded, rel_err


def sliced(arch: str, **options) -> SliceBackbone:
    """A 2.5D model with the fake ImageNet checkpoint loaded into its 2D network, in eval mode."""
    model = models.create(arch, in_channels=1, spatial_dims=3, inflate="2.5d", **options)
    models.load_pretrained(model.net, fake(arch, legacy=arch == "densenet121"))
    return model.eval()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("slice_channels", [1, 3])
def test_one_slice_volume_equals_the_2d_network_on_that_slice(arch, slice_channels):
    """With one slice, every pooling gives the 2D (gray, ImageNet-exact) network's features;
    with 3 neighbour channels the RGB stem sees [s, s, s], which the gray fold makes equal."""
    m2 = loaded(arch, in_channels=1, num_classes=None)
    g = models.imagenet_normalize(torch.rand(2, 1, 32, 32))
    with torch.no_grad():
        ref = m2(g)
        for pool in ("mean", "max", "attention"):
            m = sliced(arch, num_classes=None, slice_channels=slice_channels, pool=pool)
            assert m.net.in_channels == slice_channels
            assert rel_err(m(g.unsqueeze(2)), ref) < 1e-5, pool


def test_one_slice_logits_equal_2d_logits_with_the_same_head():
    m2 = loaded("resnet18", in_channels=1, num_classes=2)
    m = sliced("resnet18", num_classes=2, pool="attention")
    m.head.load_state_dict(m2.head.state_dict())
    g = models.imagenet_normalize(torch.rand(2, 1, 32, 32))
    with torch.no_grad():
        assert rel_err(m(g.unsqueeze(2)), m2(g)) < 1e-5


def test_slices_take_their_neighbours_with_replicated_edges():
    m = models.create("resnet18", in_channels=2, spatial_dims=3, inflate="2.5d", slice_channels=3)
    x = torch.arange(2 * 2 * 4 * 1 * 1, dtype=torch.float32).reshape(2, 2, 4, 1, 1)
    s = m.to_slices(x)  # (B * S, 3 * C, H, W), channels [z-1 (C), z (C), z+1 (C)]
    assert s.shape == (8, 6, 1, 1)
    for b in range(2):
        for z in range(4):
            want = [x[b, c, min(max(z + o, 0), 3), 0, 0] for o in (-1, 0, 1) for c in range(2)]
            assert torch.equal(s[b * 4 + z, :, 0, 0], torch.stack(want))
    strided = models.create("resnet18", in_channels=1, spatial_dims=3, inflate="2.5d", slice_channels=1,
                            slice_stride=2)
    assert strided.to_slices(torch.zeros(1, 1, 5, 8, 8)).shape == (3, 1, 8, 8)


def test_mean_and_max_pool_over_per_slice_features():
    m2 = loaded("resnet18", in_channels=1, num_classes=None)
    vol = models.imagenet_normalize(torch.rand(1, 1, 3, 32, 32))
    with torch.no_grad():
        per_slice = torch.stack([m2(vol[:, :, z]) for z in range(3)], dim=1)  # (1, 3, F)
        mean = sliced("resnet18", num_classes=None, slice_channels=1, pool="mean")
        mx = sliced("resnet18", num_classes=None, slice_channels=1, pool="max")
        assert rel_err(mean(vol), per_slice.mean(1)) < 1e-5
        assert rel_err(mx(vol), per_slice.amax(1)) < 1e-5
        maps = mean.forward_features(vol)
    assert maps.shape == (1, 512, 3, 1, 1)


def test_card_stages_and_round_trip():
    m = models.create("resnet18", in_channels=1, spatial_dims=3, num_classes=2, inflate="2.5d", pool="attention")
    assert isinstance(m, SliceBackbone) and m.spatial_dims == 3
    assert m.card["inflate"] == {"mode": "2.5d", "slice_channels": 3, "pool": "attention", "slice_stride": 1}
    names = [n for n, _ in m.stages]
    assert names[0] == "stem" and names[-1] == "head"
    head_params = {id(p) for p in m.stages[-1][1].parameters()}
    assert all(id(p) in head_params for p in m.slice_pool.parameters())
    assert {id(p) for _, s in m.stages for p in s.parameters()} == {id(p) for p in m.parameters()}
    assert m.feature_layer is m.slice_maps
    again = models.create("resnet18", in_channels=1, spatial_dims=3, num_classes=2, inflate=m.card["inflate"])
    again.load_state_dict(m.state_dict())  # strict
    m.eval(), again.eval()
    x = torch.randn(1, 1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), m(x))
    assert models.tuning.param_groups(m, 1e-3)[-1]["name"] == "head"


def test_medtl_checkpoint_loads_into_the_whole_model(tmp_path):
    m = models.create("resnet18", in_channels=1, spatial_dims=3, num_classes=2, inflate="2.5d")
    path = tmp_path / "m.pt"
    torch.save(m.state_dict(), path)
    again = models.create("resnet18", weights=path, in_channels=1, spatial_dims=3, num_classes=2,
                          inflate="2.5d")
    assert again.card["weights"]["format"] == "medtl"
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), m.state_dict().values()))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="odd"):
        SliceConfig(slice_channels=2)
    with pytest.raises(ValueError, match="pool"):
        models.create("resnet18", spatial_dims=3, inflate="2.5d", pool="median")
    with pytest.raises(ValueError, match="3D"):
        models.create("resnet18", spatial_dims=2, pool="max")
    m = models.create("resnet18", spatial_dims=3, inflate="2.5d", in_channels=1)
    with pytest.raises(ValueError, match="expects"):
        m(torch.zeros(1, 1, 32, 32))
