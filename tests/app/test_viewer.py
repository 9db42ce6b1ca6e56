"""The viewer's rules without a browser: orientation of the three planes, square pixels,
windows, colour images and overlays that follow the slice."""

import matplotlib
import numpy as np
import pytest

from medtl.app import viewer as V
from medtl.io import Scan

SHAPE = (4, 5, 6)  # i, j, k
SPACING = (1.0, 2.0, 3.0)


def ras_volume(value_at=None):
    """A RAS volume (i -> patient right, j -> anterior, k -> superior) with 1000 at the voxel that is
    most right, most anterior and most superior, and 0 elsewhere."""
    a = np.zeros(SHAPE, dtype=np.float32)
    a[value_at or (SHAPE[0] - 1, SHAPE[1] - 1, SHAPE[2] - 1)] = 1000.0
    return Scan(a, np.diag([*SPACING, 1.0]), modality="CT")


def lps_copy(scan):
    """The same patient stored in DICOM (LPS) voxel order: i and j reversed."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = SHAPE[0] - 1, SHAPE[1] - 1  # voxel i' = I-1-i, j' = J-1-j
    return Scan(scan.array[::-1, ::-1].copy(), scan.affine @ flip, modality="CT")


WINDOW = (500.0, 1000.0)  # 0 -> 0, 1000 -> 255


@pytest.mark.parametrize("plane, index", [("axial", SHAPE[2] - 1), ("coronal", 0), ("sagittal", 0)])
def test_right_anterior_superior_corner_is_top_left_in_radiological_view(plane, index):
    # axial: anterior up, patient right on the left; coronal: head up, right on the left;
    # sagittal: head up, anterior on the left. The marker sits in that corner of each.
    disp = V.for_display(ras_volume())
    assert disp.orientation == "LPS"
    rgb = V.render(disp, plane, index, WINDOW, min_side=1)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[-1, -1].tolist() == [0, 0, 0]
    assert rgb.sum() > 0 and (rgb > 0).sum() < rgb.size  # only the corner lights up


@pytest.mark.parametrize("plane", V.PLANES)
def test_same_patient_stored_ras_or_lps_displays_identically(plane):
    ras = ras_volume(value_at=(1, 3, 2))
    lps = lps_copy(ras)
    a, b = V.for_display(ras), V.for_display(lps)
    for index in range(V.n_slices(a, plane)):
        np.testing.assert_array_equal(V.render(a, plane, index, WINDOW), V.render(b, plane, index, WINDOW))


def test_slices_have_square_pixels():
    disp = V.for_display(ras_volume())  # spacing L 1, P 2, S 3 mm
    # axial: rows P (2 mm), columns L (1 mm) -> rows stretched 2x, then enlarged to >= 384 px
    assert V.render(disp, "axial", 0, WINDOW).shape == (390, 156, 3)  # 5*2=10 x 4 -> factor 39
    # coronal: rows S (3 mm), columns L (1 mm): 18 x 4, enlarged 22x
    assert V.render(disp, "coronal", 0, WINDOW).shape == V.display_size((6, 4), 3.0) + (3,) == (396, 88, 3)
    assert V.render(disp, "sagittal", 0, WINDOW, min_side=1).shape == (9, 5, 3)  # 6*3 mm x 5*2 mm at 2 mm
    for shape, aspect in [((32, 64), 5 / 4.5), ((128, 128), 1.0), ((100, 37), 0.7)]:
        rows, cols = V.display_size(shape, aspect)
        assert max(rows, cols) >= V.MIN_DISPLAY_SIDE
        assert rows / cols == pytest.approx(shape[0] * aspect / shape[1], rel=0.02)  # physical proportions


def test_display_size_keeps_the_finer_axis_and_enlarges_by_an_integer():
    assert V.display_size((10, 20), 2.0, min_side=1) == (20, 20)
    assert V.display_size((10, 10), 0.5, min_side=1) == (10, 20)
    assert V.display_size((128, 128), 1.0) == (384, 384)
    assert V.display_size((1000, 500), 1.0) == (1000, 500)
    with pytest.raises(ValueError):
        V.display_size((0, 4), 1.0)


def test_2d_image_is_shown_as_stored_and_has_only_its_own_plane():
    a = np.zeros((6, 3, 1), dtype=np.float32)  # i (columns) 6, j (rows) 3
    a[4, 1, 0] = 1000.0
    scan = Scan(a, np.eye(4))  # a PNG: RAS-coded identity affine, must not be flipped
    disp = V.for_display(scan)
    assert V.planes(disp) == ("axial",) and V.n_slices(disp, "axial") == 1
    rgb = V.render(disp, "axial", 0, WINDOW, min_side=1)
    assert rgb.shape == (3, 6, 3) and np.argwhere(rgb[..., 0] == 255).tolist() == [[1, 4]]
    with pytest.raises(ValueError):
        V.n_slices(disp, "coronal")


def test_overlay_follows_the_slice_and_opacity():
    scan = ras_volume()
    sal = scan.with_array((scan.array > 0).astype(np.float32), modality="SAL")  # saliency 1 at the marker
    disp, sal_disp = V.for_display(scan), V.for_display(sal)
    k = SHAPE[2] - 1
    plain = V.render(disp, "axial", k, WINDOW, min_side=1)
    np.testing.assert_array_equal(V.render(disp, "axial", k, WINDOW, sal_disp, alpha=0.0, min_side=1), plain)
    only_map = V.render(disp, "axial", k, WINDOW, sal_disp, alpha=1.0, min_side=1)
    hot = np.round(np.asarray(matplotlib.colormaps["inferno"](1.0)[:3]) * 255).astype(int).tolist()
    assert only_map[0, 0].tolist() == hot  # inferno(1) on the marker
    # below the threshold the scan shows unchanged (no wash): everything but the marker's neighbourhood
    changed = (only_map != plain).any(axis=2)
    assert changed[0, 0] and not changed[2:].any() and not changed[:, 2:].any()
    other = V.render(disp, "axial", 0, WINDOW, sal_disp, alpha=1.0, min_side=1)
    np.testing.assert_array_equal(other, V.render(disp, "axial", 0, WINDOW, min_side=1))  # slice without the marker
    with pytest.raises(ValueError):
        V.render(disp, "axial", 0, WINDOW, V.for_display(Scan(np.zeros((2, 2, 2)), np.eye(4))))
    with pytest.raises(ValueError):
        V.render(disp, "axial", SHAPE[2], WINDOW)


def test_colour_image_keeps_its_colours():
    rgb = np.zeros((4, 2, 1, 3), dtype=np.uint8)  # [i, j, k, c]
    rgb[:2, :, 0] = [200, 30, 10]
    rgb[2:, :, 0] = [5, 90, 250]
    scan = Scan(rgb, np.eye(4), photometric="RGB")
    out = V.render(V.for_display(scan), "axial", 0, None, min_side=1)
    assert out.shape == (2, 4, 3)
    assert out[:, :2].reshape(-1, 3).tolist() == [[200, 30, 10]] * 4
    assert out[:, 2:].reshape(-1, 3).tolist() == [[5, 90, 250]] * 4


def test_ct_presets_are_the_usual_width_level_pairs():
    assert V.CT_PRESETS == {"Soft tissue": (40, 400), "Lung": (-600, 1500), "Bone": (480, 2500),
                            "Brain": (40, 80), "Liver": (90, 150)}
    assert V.window_choices(True, (40.0, 400.0)) == [V.FILE_WINDOW, *V.CT_PRESETS, V.AUTO_WINDOW]
    assert V.window_choices(False, None) == [V.AUTO_WINDOW]
    assert V.default_preset(True, (-500.0, 1200.0)) == V.FILE_WINDOW
    assert V.default_preset(True, None) == "Soft tissue" and V.default_preset(False, None) == V.AUTO_WINDOW
    a = np.zeros((2, 2, 2))
    assert V.preset_window(V.FILE_WINDOW, a, (-500.0, 1200.0)) == (-500.0, 1200.0)
    assert V.preset_window("Lung", a, None) == (-600.0, 1500.0)
    with pytest.raises(ValueError):
        V.preset_window(V.FILE_WINDOW, a, None)


def test_apply_window_maps_level_and_edges():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    assert V.apply_window(hu, 40, 400).tolist() == [0, 0, 128, 255, 255]


def test_auto_window_spans_the_percentiles():
    c, w = V.auto_window(np.arange(1000, dtype=np.float32))
    lo, hi = np.percentile(np.arange(1000), [0.5, 99.5])
    assert (c - w / 2, c + w / 2) == pytest.approx((lo, hi))
    assert V.auto_window(np.full(10, 7.0)) == (7.5, 1.0)  # flat image: a 1-wide window, never 0


def test_hounsfield_units_are_recognised_without_a_modality():
    assert V.looks_like_ct("CT", np.zeros(3))
    assert V.looks_like_ct("OT", np.array([-1024.0, 40.0]))  # a NIfTI CT
    assert not V.looks_like_ct("OT", np.array([0.0, 900.0]))  # MR-like
    assert not V.looks_like_ct("MR", np.array([-1024.0]))
    assert not V.looks_like_ct("OT", np.zeros((2, 2, 1, 3)))


def test_slider_ranges_hold_data_and_every_offered_window():
    (l_lo, l_hi), (w_lo, w_hi) = V.slider_ranges(np.array([-1024.0, 1000.0]), list(V.CT_PRESETS.values()))
    assert l_lo == -1024.0 and l_hi == 1000.0 and w_hi == 2 * 2500.0 and 0 < w_lo <= 1.0


def test_scan_facts_name_modality_shape_spacing_orientation_and_window():
    scan = ras_volume()
    scan.metadata.update(window_center=40, window_width=400)
    facts = dict(V.scan_facts(scan.summary()))
    assert facts["Modality"] == "CT" and facts["Shape (i × j × k)"] == "4 × 5 × 6"
    assert facts["Spacing"] == "1 × 2 × 3 mm" and facts["Orientation"] == "RAS"
    assert facts["Window in file"] == "level 40, width 400"


@pytest.mark.parametrize("plane, index", [("coronal", 0), ("sagittal", 0)])
def test_overlay_follows_the_plane(plane, index):
    """The 3D map is sliced in the same plane as the scan: the marker's saliency lands on the marker's pixel."""
    scan = ras_volume()
    sal = scan.with_array((scan.array > 0).astype(np.float32), modality="SAL")
    disp, sal_disp = V.for_display(scan), V.for_display(sal)
    shown = V.render(disp, plane, index, WINDOW, sal_disp, alpha=1.0, min_side=1)
    plain = V.render(disp, plane, index, WINDOW, min_side=1)
    changed = (shown != plain).any(axis=2)
    assert changed[0, 0] and not changed[-1, -1]
    other = V.render(disp, plane, V.n_slices(disp, plane) - 1, WINDOW, sal_disp, alpha=1.0, min_side=1)
    np.testing.assert_array_equal(other, V.render(disp, plane, V.n_slices(disp, plane) - 1, WINDOW, min_side=1))


def test_render_draws_an_optional_contour():
    scan = ras_volume()
    sal = scan.with_array((scan.array > 0).astype(np.float32), modality="SAL")
    out = V.render(V.for_display(scan), "axial", SHAPE[2] - 1, WINDOW, V.for_display(sal), contour=0.5, min_side=1)
    assert out[0, 0].tolist() == [0, 255, 255]


def test_labelled_download_names_method_class_probability_model_and_slice():
    rgb = V.render(V.for_display(ras_volume()), "axial", 0, WINDOW, min_side=64)
    kw = dict(method="LayerCAM, strides 8+16", class_name="lesion", probability=0.9, model="demo@1")
    pic = V.labelled(rgb, **kw, plane="axial", index=0, n=SHAPE[2])
    assert pic.dtype == np.uint8 and pic.shape[0] > rgb.shape[0] and pic.shape[1] > rgb.shape[1]
    assert (V.labelled(rgb, **kw, plane="axial", index=1, n=SHAPE[2]) != pic).any()  # the slice is written


def test_a_large_picture_is_shrunk_for_the_screen_by_averaging_not_sampling():
    """A 4000 x 4000 mammogram was redrawn at full size on every slider step (seconds each)."""
    assert V.display_size((4000, 4000), 1.0) == (V.MAX_DISPLAY_SIDE, V.MAX_DISPLAY_SIDE)
    assert V.display_size((8000, 2000), 1.0) == (1024, 256) and V.display_size((128, 128), 1.0) == (384, 384)
    board = (np.indices((2048, 2048)).sum(axis=0) % 2).astype(np.float32)  # 1-pixel checkerboard
    scan = Scan(board.T[:, :, None], np.eye(4), format="image")
    rgb = V.render(scan, "axial", 0, (0.5, 1.0))
    assert rgb.shape == (1024, 1024, 3) and np.all(rgb == 128)  # each 2 x 2 block is half white: grey, no moire
