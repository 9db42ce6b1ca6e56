import numpy as np
import pytest
import torch

from medtl.transforms import array_to_scan, from_network_layout, to_network_layout


@pytest.mark.parametrize("dims", [2, 3])
def test_network_layout_reverses_spatial_axes_and_round_trips(dims):
    shape = (2, 3, 4, 5)[: dims + 1]
    x = np.arange(np.prod(shape)).reshape(shape)
    y = to_network_layout(x, dims)
    assert y.shape == (shape[0],) + shape[1:][::-1]
    idx = (1, 2, 3, 4)[:dims]
    assert y[(1,) + idx[::-1]] == x[(1,) + idx]
    np.testing.assert_array_equal(from_network_layout(y, dims), x)
    t = torch.from_numpy(x)
    assert torch.equal(from_network_layout(to_network_layout(t, dims), dims), t)


def test_layout_rejects_wrong_rank():
    with pytest.raises(ValueError):
        to_network_layout(np.zeros((1, 2, 3)), 3)


def test_array_to_scan_orientations():
    img = np.arange(12).reshape(3, 4)  # (H, W)
    s = array_to_scan(img)
    assert s.shape == (4, 3, 1)
    np.testing.assert_array_equal(s.array[:, :, 0], img.T)
    rgb = np.arange(3 * 4 * 3).reshape(3, 4, 3)
    s = array_to_scan(rgb)
    assert s.is_color and s.array.shape == (4, 3, 1, 3) and s.photometric == "RGB"
    np.testing.assert_array_equal(s.array[2, 1, 0], rgb[1, 2])
    vol = np.arange(2 * 3 * 5).reshape(2, 3, 5)  # (D, H, W)
    s = array_to_scan(vol)
    assert s.shape == (5, 3, 2)
    assert s.array[3, 1, 0] == vol[0, 1, 3]
    np.testing.assert_array_equal(s.affine, np.eye(4))
    # a volume with 3 columns is ambiguous: spatial_dims=3 says it is a volume
    assert array_to_scan(np.zeros((5, 4, 3)), spatial_dims=3).shape == (3, 4, 5)
    with pytest.raises(ValueError):
        array_to_scan(np.zeros((2, 2, 2, 2)))
