"""What a user can get wrong in the pipeline is a one-line MedtlError naming the value and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import io as skio

from medtl.errors import ConfigError, MedtlError, ScanError
from medtl.transforms import EnsureChannels, LoadScan, Preprocessing, window


def _one_line(exc: BaseException, *needles: str) -> str:
    msg = str(exc)
    assert isinstance(exc, MedtlError) and "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.mark.parametrize("settings,needles", [
    ({"window": "bogus"}, ["preprocess.window", "'bogus'", "auto", "percentile", "lung", "40/400"]),
    ({"window": "40/0"}, ["preprocess.window", "'40/0'", "positive"]),
    ({"spatial_dims": 3, "size": [32, 32]}, ["preprocess.size=[32, 32]", "spatial_dims=3", "[D, H, W]"]),
    ({"spatial_dims": 4}, ["preprocess.spatial_dims", "2 or 3"]),
    ({"size": [0, 0]}, ["preprocess.size=[0, 0]", "positive"]),
    ({"channels": 2}, ["preprocess.channels=2", "1 (gray) or 3 (RGB)"]),
    ({"normalize": "minmax"}, ["preprocess.normalize", "'imagenet'", "'zscore'", "'none'"]),
    ({"windw": "lung"}, ["preprocess.windw", "window", "size", "spatial_dims"]),
    # these two reached MONAI's Orientationd / the resampler at the first volume, as an "internal error"
    ({"orientation": "XYZ"}, ["preprocess.orientation='XYZ'", "one of each of L/R, P/A, I/S", "null"]),
    ({"spatial_dims": 3, "size": [8], "spacing": [0, 1, 1]}, ["preprocess.spacing=[0.0, 1.0, 1.0]", "above 0"]),
])
def test_bad_settings_are_one_line_config_errors(settings, needles):
    for build in (Preprocessing.from_dict, lambda s: Preprocessing(**s)):
        with pytest.raises(ConfigError) as exc:
            build(settings)
        _one_line(exc.value, *needles)


def test_axis_codes_and_spacings_that_are_valid_are_kept():
    for orientation in ("RAS", "LPS", "SAR", None):
        assert Preprocessing(spatial_dims=3, size=[8], orientation=orientation).orientation == orientation
    assert Preprocessing(spatial_dims=3, size=[8], spacing=[0.5, 0.5, 2]).spacing == [0.5, 0.5, 2.0]


def test_transform_arguments_are_config_errors():
    with pytest.raises(ConfigError) as exc:
        window(np.zeros(3), 40.0, 0.0)
    _one_line(exc.value, "width 0.0", "40/400")
    with pytest.raises(ConfigError) as exc:
        LoadScan(spatial_dims=4)
    _one_line(exc.value, "spatial_dims=4", "2, 3 or None")
    with pytest.raises(ConfigError) as exc:
        EnsureChannels(4)
    _one_line(exc.value, "channels=4", "1 (gray) or 3 (RGB)")


def test_an_image_with_other_channels_is_a_scan_error():
    with pytest.raises(ScanError) as exc:
        EnsureChannels(3)(torch.zeros(2, 4, 4))
    _one_line(exc.value, "2 channels", "takes 3", "gray or RGB")


def test_wrong_dimensionality_is_a_scan_error_with_the_fix(tmp_path):
    skio.imsave(tmp_path / "img.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    with pytest.raises(ScanError) as exc:
        Preprocessing(spatial_dims=3, size=[8, 8, 8])(tmp_path / "img.png")
    _one_line(exc.value, "img.png", "3D model", "preprocess.spatial_dims: 2")
    with pytest.raises(ScanError) as exc:
        Preprocessing(spatial_dims=3, size=[8, 8, 8])(np.zeros((8, 8), np.uint8))
    _one_line(exc.value, "in-memory array", "(D, H, W)")


def test_a_2d_image_far_longer_than_wide_is_refused_before_resizing(tmp_path):
    # resizing 1 x 60,000,000 pixels to a square input took minutes (the anti-aliasing kernel grows
    # with the scale factor); a file of that shape is 116 KB of PNG
    prep = Preprocessing(spatial_dims=2, size=[32, 32], window="none")
    with pytest.raises(ScanError, match=r"image of 1 x 6500 pixels, one side over 64 times the other"):
        prep(np.zeros((6500, 1), np.float32))
    assert prep(np.zeros((640, 10), np.float32)).shape == (1, 32, 32)  # 64:1 still goes


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_an_array_with_non_finite_values_is_refused_like_a_file(bad):
    # a NaN used to make the whole network input NaN (the percentile window spreads it)
    img = np.ones((8, 8), np.float32)
    img[2, 3] = bad
    with pytest.raises(ScanError) as exc:
        Preprocessing(size=[8, 8])(img)
    _one_line(exc.value, "in-memory array", "1 of 64 values are not finite", "background value")


def test_file_names_or_an_empty_path_are_not_read_as_pixels_or_the_current_folder(tmp_path, monkeypatch):
    """A list of file names became an array "of shape (2,)", refused as a badly shaped image; ``""`` went
    through ``Path("")``, the current folder, and loaded whatever series lay there."""
    from medtl.transforms import as_scan

    with pytest.raises(ScanError, match=r"^in-memory array of str\d* \(2,\), not pixel values \(give one path, a "
                                         r"Scan or a numeric array; for a series of files, their folder or .zip\)$"):
        as_scan(np.asarray(["a.dcm", "b.dcm"]))
    monkeypatch.chdir(tmp_path)
    skio.imsave(tmp_path / "a.png", np.arange(64, dtype=np.uint8).reshape(8, 8), check_contrast=False)
    with pytest.raises(ScanError, match=r"^the scan path is empty"):
        as_scan("")
