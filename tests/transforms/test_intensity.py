import numpy as np
import pytest
import torch

from medtl.errors import ConfigError
from medtl.io.scan import Scan
from medtl.transforms import CT_WINDOWS, Preprocessing, parse_window, resolve_window, scale_intensity, window


def test_ct_presets_map_known_hu_to_known_values():
    hu = np.array([-2000.0, -1350.0, -600.0, 150.0, 3000.0])
    np.testing.assert_allclose(window(hu, *CT_WINDOWS["lung"]), [0, 0, 0.5, 1, 1], atol=1e-6)
    hu = np.array([-160.0, -60.0, 40.0, 240.0])
    np.testing.assert_allclose(window(hu, *CT_WINDOWS["soft_tissue"]), [0, 0.25, 0.5, 1], atol=1e-6)
    np.testing.assert_allclose(window(torch.tensor([0.0, 40.0, 80.0]), *CT_WINDOWS["brain"]), [0, 0.5, 1], atol=1e-6)
    assert CT_WINDOWS["bone"] == (480, 2500) and CT_WINDOWS["liver"] == (90, 150)
    assert CT_WINDOWS["mediastinum"] == (50, 350)


def test_window_specs():
    assert parse_window("40/400") == (40.0, 400.0)
    assert parse_window("lung") == CT_WINDOWS["lung"]
    assert parse_window("Auto") == "auto"
    for bad in ("lungs", "40/0", "40", "x/y"):
        with pytest.raises(ConfigError):
            parse_window(bad)
    with pytest.raises(ConfigError):
        Preprocessing.from_dict({"window": "wide"})


def test_auto_window_rules():
    assert resolve_window("auto", file_window=(50, 100), modality="CT", dtype="int16") == (50, 100)
    assert resolve_window("auto", dtype="uint8") == (127.5, 255.0)
    assert resolve_window("auto", modality="CT", dtype="int16") == (0.0, 2000.0)
    assert resolve_window("auto", modality="MR", dtype="uint16") == "percentile"
    assert resolve_window("lung", file_window=(50, 100)) == CT_WINDOWS["lung"]
    x = np.array([[0.0, 5.0, 10.0]])
    np.testing.assert_allclose(scale_intensity(x, "percentile", (0, 100)), [[0, 0.5, 1]])
    assert scale_intensity(x, "none") is x


def test_auto_window_uses_the_files_dicom_window():
    hu = np.array([[-100.0, 0.0, 50.0, 100.0, 200.0]]).T  # i = 5, j = 1
    scan = Scan(hu, np.eye(4), modality="CT", metadata={"window_center": 50.0, "window_width": 100.0})
    prep = Preprocessing(size=[], window="auto", normalize="none")
    out = prep(scan)
    np.testing.assert_allclose(out[0, 0].numpy(), [0, 0, 0.5, 1, 1], atol=1e-6)
    no_window = Scan(hu, np.eye(4), modality="CT")
    np.testing.assert_allclose(prep(no_window)[0, 0].numpy(), [0.45, 0.5, 0.525, 0.55, 0.6], atol=1e-6)


def test_auto_scales_8bit_by_255():
    img = np.array([[0, 51, 255]], dtype=np.uint8)
    out = Preprocessing(size=[], normalize="none")(img)
    np.testing.assert_allclose(out[0].numpy(), [[0, 0.2, 1]], atol=1e-6)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_percentile_window_of_a_mostly_blank_image_stays_in_unit_range(as_tensor):
    # 10 bright pixels in 10,000: the 0.5 and 99.5 percentiles are both 0, so min..max is used
    x = np.zeros((1, 100, 100), np.float32)
    x[0, 0, :10] = 500.0
    out = scale_intensity(torch.from_numpy(x) if as_tensor else x, "percentile")
    expected = np.zeros_like(x)
    expected[0, 0, :10] = 1.0
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_display_window_of_a_mostly_blank_image_shows_the_object_as_the_network_sees_it():
    from medtl.transforms.intensity import window_to_unit

    x = np.zeros((100, 100), np.float32)
    x[0, :10] = 500.0
    np.testing.assert_array_equal(window_to_unit(x), scale_intensity(x[None], "percentile")[0])
    assert window_to_unit(x).max() == 1.0
