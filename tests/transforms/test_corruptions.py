import numpy as np
import pytest

from medtl.transforms.corruptions import CORRUPTIONS, MODALITY_CORRUPTIONS, SEVERITIES, corrupt, corrupt_uint8


def _image(colour=False, size=28):
    """A smooth synthetic 'radiograph': a bright ellipse with darker lungs, values in [0.1, 0.9]."""
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    img = 0.1 + 0.6 * np.exp(-((xx - 0.5) ** 2 / 0.08 + (yy - 0.5) ** 2 / 0.12))
    img += 0.2 * (np.sin(6 * xx) * np.cos(5 * yy) + 1) / 2
    img = img.astype(np.float32)
    return np.stack([img, img * 0.8, img * 0.6], -1) if colour else img


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("colour", [False, True])
def test_each_corruption_grows_with_severity_and_stays_in_range(name, colour):
    x = _image(colour)
    dist = []
    for s in SEVERITIES:
        y = corrupt(x, name, s, seed=1)
        assert y.shape == x.shape and y.dtype == np.float32
        assert 0.0 <= y.min() and y.max() <= 1.0
        assert np.array_equal(y, corrupt(x, name, s, seed=1))  # deterministic for a seed
        dist.append(float(np.abs(y - x).mean()))
    assert dist[0] > 0, f"{name} severity 1 changed nothing"
    assert all(b >= a - 1e-4 for a, b in zip(dist, dist[1:])), f"{name}: {dist}"
    assert dist[-1] > dist[0]


def test_direction_of_the_intensity_corruptions():
    x = _image()
    assert corrupt(x, "brightness_up", 3).mean() > x.mean() > corrupt(x, "brightness_down", 3).mean()
    assert corrupt(x, "contrast_up", 3).std() > x.std() > corrupt(x, "contrast_down", 3).std()
    assert corrupt(x, "gamma_up", 3).mean() < x.mean() < corrupt(x, "gamma_down", 3).mean()


def test_uint8_round_trip_and_errors():
    u8 = np.round(_image() * 255).astype(np.uint8)
    out = corrupt_uint8(u8, "jpeg", 5)
    assert out.dtype == np.uint8 and out.shape == u8.shape and not np.array_equal(out, u8)
    assert set(MODALITY_CORRUPTIONS["fundus"]) <= set(CORRUPTIONS)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(u8, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(u8, "jpeg", 6)
    with pytest.raises(ValueError, match="shape"):
        corrupt(np.zeros((4, 4, 4)), "jpeg", 1)


def test_module_example_runs_as_written():
    import doctest

    import medtl.transforms.corruptions as module

    assert doctest.testmod(module).failed == 0
