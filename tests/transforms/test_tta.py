"""Test-time augmentation views: which views a training augmentation gives, and that each view is the
geometric change it names (exact where the grid lands on pixel centres)."""

import math

import pytest
import torch

from medtl.transforms.config import AugmentConfig
from medtl.transforms.tta import TTA_EXTENT, View, apply_view, tta_probabilities, tta_views


def test_views_follow_the_training_augmentation():
    aug = AugmentConfig(flip=False, rotate_deg=10, zoom=(0.9, 1.1), shift=0.06)
    views = tta_views(aug, spatial_dims=2)
    assert views[0].is_identity and len(views) == 1 + 2 + 2 + 4
    assert sorted({v.rotate_deg for v in views}) == pytest.approx([-10 * TTA_EXTENT, 0.0, 10 * TTA_EXTENT])
    assert sorted(v.zoom for v in views if v.zoom != 1) == pytest.approx([1 - 0.1 * TTA_EXTENT, 1 + 0.1 * TTA_EXTENT])
    shifts = sorted(tuple(round(t, 9) for t in v.shift) for v in views if v.shift)
    assert shifts == [(-0.04, 0.0), (0.0, -0.04), (0.0, 0.04), (0.04, 0.0)]
    assert all(v.flip is None for v in views)
    flips = tta_views(AugmentConfig(flip=True, flip_axes=[0, 1]), spatial_dims=2)
    assert [v.flip for v in flips] == [None, 0, 1]
    assert tta_views(AugmentConfig(flip=False), spatial_dims=3) == [View()]
    assert len(tta_views(AugmentConfig(flip=False, shift=0.1), spatial_dims=3)) == 1 + 6
    assert View.from_dict(views[3].to_dict()) == views[3]


def test_identity_flip_and_quarter_turn_are_exact():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    assert torch.equal(apply_view(x, View()), x)
    assert torch.equal(apply_view(x, View(flip=1)), torch.flip(x, dims=[3]))
    turned = apply_view(x, View(rotate_deg=90))
    assert any(torch.allclose(turned, torch.rot90(x, k, dims=(2, 3)), atol=1e-4) for k in (1, -1))


def test_shift_moves_the_image_by_its_fraction_of_the_size_along_the_named_axis():
    x = torch.rand(1, 1, 8, 10, dtype=torch.float64)
    down = apply_view(x, View(shift=(1 / 8, 0.0)))  # one row along H
    right = apply_view(x, View(shift=(0.0, 2 / 10)))  # two columns along W
    assert torch.allclose(down[..., 1:, :], x[..., :-1, :]) or torch.allclose(down[..., :-1, :], x[..., 1:, :])
    assert torch.allclose(right[..., 2:], x[..., :-2]) or torch.allclose(right[..., :-2], x[..., 2:])
    vol = torch.rand(1, 1, 4, 5, 6, dtype=torch.float64)
    deeper = apply_view(vol, View(shift=(1 / 4, 0.0, 0.0)))  # one slice along D
    assert torch.allclose(deeper[:, :, 1:], vol[:, :, :-1]) or torch.allclose(deeper[:, :, :-1], vol[:, :, 1:])


def test_zoom_enlarges_about_the_centre():
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[..., 3:6, 3:6] = 1.0  # a 3-pixel square in the middle
    z = apply_view(x, View(zoom=3.0))
    assert z[..., 4, 4] == 1.0 and z[..., 1:8, 1:8].min() == 1.0 and z.sum() > 3 * x.sum()


def test_probabilities_average_the_views_softmax():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x = torch.rand(5, 1, 12, 12)
    views = tta_views(AugmentConfig(flip=True, rotate_deg=15, zoom=(0.8, 1.2), shift=0.1), spatial_dims=2)
    p = tta_probabilities(model, x, views)
    want = torch.stack([torch.softmax(model(apply_view(x, v)).double(), 1) for v in views]).mean(0)
    assert p.dtype == torch.float64 and torch.allclose(p, want, atol=1e-12)
    assert torch.allclose(p.sum(1), torch.ones(5, dtype=torch.float64))
    assert not torch.allclose(p, torch.softmax(model(x).double(), 1))  # the views do change the answer here
    assert torch.allclose(tta_probabilities(model, x, [View()]), torch.softmax(model(x).double(), 1))
    # the identity's logits, when given, are used instead of a second forward pass
    fake = torch.zeros(5, 3)
    only_given = tta_probabilities(lambda t: (_ for _ in ()).throw(AssertionError("ran")), x, [View()], logits=fake)
    assert torch.allclose(only_given, torch.full((5, 3), 1 / 3, dtype=torch.float64))


def test_view_of_a_batch_with_the_wrong_rank_is_refused():
    with pytest.raises(ValueError, match="spatial axes"):
        apply_view(torch.zeros(1, 1, 4, 4), View(shift=(0.1, 0.0, 0.0)))
    with pytest.raises(ValueError, match="batch"):
        apply_view(torch.zeros(4, 4), View(rotate_deg=math.pi))


def test_views_exist_for_images_and_volumes_only():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 4"):
        tta_views(AugmentConfig(), 4)
