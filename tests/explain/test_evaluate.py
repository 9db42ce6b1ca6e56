"""medtl.explain.evaluate: pointing game, mass inside the lesion, deletion score -- exact on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medtl.explain import deletion_score, mass_inside, method_title, pointing_hit


def _lesion_2d() -> np.ndarray:
    mask = np.zeros((20, 20, 1), bool)  # a 2D scan's [i, j, k] grid
    mask[8:11, 8:11, 0] = True
    return mask


def test_pointing_hit_uses_a_two_voxel_margin_in_plane_only():
    mask = _lesion_2d()
    for (i, j), want in {(9, 9): True, (12, 9): True, (13, 9): False, (12, 12): False, (6, 10): True,
                         (5, 10): False}.items():
        m = np.zeros(mask.shape, np.float32)
        m[i, j, 0] = 1.0
        assert pointing_hit(m, mask) is want, (i, j)
    m = np.zeros(mask.shape, np.float32)
    m[13, 9, 0] = 1.0
    assert pointing_hit(m, mask, dilate=3) and not pointing_hit(m, mask, dilate=0)


def test_pointing_hit_in_3d_dilates_along_every_axis():
    mask = np.zeros((10, 10, 10), bool)
    mask[4:6, 4:6, 4:6] = True
    m = np.zeros(mask.shape)
    m[4, 4, 7] = 1.0
    assert pointing_hit(m, mask)
    m[4, 4, 7], m[4, 4, 8] = 0.0, 1.0
    assert not pointing_hit(m, mask)


def test_mass_inside():
    mask = _lesion_2d()
    m = np.zeros(mask.shape)
    m[mask] = 3.0
    m[0, 0, 0] = 9.0
    assert mass_inside(m, mask) == pytest.approx(27.0 / 36.0)
    assert mass_inside(np.ones(mask.shape), mask) == pytest.approx(mask.mean())  # flat map: the area share
    assert mass_inside(np.zeros(mask.shape), mask) == 0.0
    with pytest.raises(ValueError, match="empty"):
        mass_inside(m, np.zeros(mask.shape, bool))


class _Spot(nn.Module):
    """p(class 1) rises with the input's value at pixel (3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 3, 3]
        return torch.stack([torch.zeros_like(v), 4.0 * v], dim=1)


def test_deletion_score_is_low_when_the_map_finds_what_the_model_uses():
    x = torch.zeros(1, 16, 16)
    x[0, 3, 3] = 2.0
    rows, cols = np.mgrid[:16, :16]
    right = -np.hypot(rows - 3, cols - 3)  # ranks (3, 3) first
    wrong = -np.hypot(rows - 12, cols - 12)  # (3, 3) is never in its top 20 %
    good, bad = deletion_score(_Spot(), x, right, 1), deletion_score(_Spot(), x, wrong, 1)
    assert bad == pytest.approx(1.0, abs=1e-6)
    assert good < 0.85


def test_method_title_names_the_stages():
    assert method_title("gradcam") == "Grad-CAM, last stage"
    assert method_title("gradcam", 8) == "Grad-CAM, stride 8"
    assert method_title("layercam", [8, 16]) == "LayerCAM, strides 8+16"
    assert method_title("occlusion") == "Occlusion"
