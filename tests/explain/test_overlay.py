"""Display slices, aspect, display orientation, overlays and the PNG writer."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from medtl.explain import (
    SALIENCY_CMAP,
    contour_mask,
    display_aspect,
    heatmap_overlay,
    labelled_overlay,
    display_slice,
    overlay,
    save_overlay_png,
    to_display_orientation,
    window_to_unit,
)
from medtl.io import Scan

I, J, K = 5, 4, 3


def _numbered() -> np.ndarray:
    """a[i, j, k] = 100 i + 10 j + k: every voxel says where it is."""
    i, j, k = np.meshgrid(np.arange(I), np.arange(J), np.arange(K), indexing="ij")
    return 100 * i + 10 * j + k


def test_display_slice_orientation():
    a = _numbered()
    ax = display_slice(a, 1, "axial")
    assert ax.shape == (J, I)
    assert ax[0, 0] == 1 and ax[0, 1] == 101 and ax[1, 0] == 11  # rows j, columns i
    co = display_slice(a, 2, "coronal")
    assert co.shape == (K, I)
    assert co[0, 0] == 20 + (K - 1) and co[-1, 0] == 20 and co[-1, 1] == 120  # last slice on top, columns i
    sa = display_slice(a, 3, "sagittal")
    assert sa.shape == (K, J)
    assert sa[0, 0] == 300 + (K - 1) and sa[-1, 0] == 300 and sa[-1, 1] == 310  # columns j
    rgb = np.stack([a, -a, 2 * a], axis=-1)
    np.testing.assert_array_equal(display_slice(rgb, 1, "axial")[..., 2], 2 * ax)
    assert display_slice(a, -1, "axial")[0, 0] == K - 1
    with pytest.raises(IndexError):
        display_slice(a, K, "axial")
    with pytest.raises(ValueError, match="plane"):
        display_slice(a, 0, "oblique")


def test_display_aspect():
    scan = Scan(array=np.zeros((I, J, K)), affine=np.diag([0.5, 0.8, 2.0, 1.0]))
    assert display_aspect(scan, "axial") == pytest.approx(0.8 / 0.5)
    assert display_aspect(scan, "coronal") == pytest.approx(2.0 / 0.5)
    assert display_aspect(scan, "sagittal") == pytest.approx(2.0 / 0.8)


def test_to_display_orientation_keeps_world_positions():
    ras = np.diag([0.5, 0.8, 2.0, 1.0])
    ras[:3, 3] = [1.0, 2.0, 3.0]
    scan = Scan(array=_numbered().astype(np.float32), affine=ras)
    assert scan.orientation == "RAS"
    lps = to_display_orientation(scan)
    assert lps.orientation == "LPS" and lps.shape == scan.shape
    for v in [(0, 0, 0), (4, 1, 2), (2, 3, 1)]:
        world = ras @ np.array([*v, 1.0])
        w = np.rint(np.linalg.solve(lps.affine, world)[:3]).astype(int)
        assert lps.array[tuple(w)] == scan.array[v]
    assert to_display_orientation(lps) is lps


def test_window_to_unit():
    img = np.array([[-100.0, 0.0], [50.0, 300.0]])
    np.testing.assert_allclose(window_to_unit(img, (0.0, 200.0)), [[0.0, 0.5], [0.75, 1.0]])
    u = window_to_unit(np.arange(1000.0).reshape(25, 40))
    assert u.min() == 0.0 and u.max() == 1.0 and u.dtype == np.float32
    with pytest.raises(ValueError, match="width"):
        window_to_unit(img, (0.0, 0.0))


def test_overlay_blend():
    rng = np.random.default_rng(0)
    img = rng.normal(40.0, 100.0, size=(12, 20))
    sal = rng.random((12, 20))
    out = overlay(img, sal, window=(40.0, 400.0), alpha=0.4)
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8
    gray = window_to_unit(img, (40.0, 400.0))
    plain = overlay(img, sal, window=(40.0, 400.0), alpha=0.0)
    for c in range(3):
        np.testing.assert_array_equal(plain[..., c], np.round(gray.astype(np.float64) * 255).astype(np.uint8))
    heat = overlay(img, sal, alpha=1.0, cmap="viridis")
    np.testing.assert_array_equal(heat, np.round(matplotlib.colormaps["viridis"](sal)[..., :3] * 255).astype(np.uint8))
    want = np.round((0.6 * gray[..., None] + 0.4 * matplotlib.colormaps["jet"](sal)[..., :3]) * 255)
    np.testing.assert_array_equal(out, want.astype(np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        overlay(img, sal.T)
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, sal, alpha=1.5)


def test_save_overlay_png(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    path = save_overlay_png(tmp_path / "sub" / "o.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    assert [p.name for p in path.parent.iterdir()] == ["o.png"]  # no temporary file left
    with pytest.raises(ValueError, match="uint8"):
        save_overlay_png(tmp_path / "bad.png", rgb.astype(np.float32))


def test_window_to_unit_has_one_home():
    from medtl.transforms import intensity

    assert window_to_unit is intensity.window_to_unit


def test_heatmap_overlay_leaves_low_saliency_transparent():
    rng = np.random.default_rng(0)
    img = rng.normal(40.0, 100.0, size=(12, 20))
    sal = rng.random((12, 20))
    gray = np.repeat(window_to_unit(img, (40.0, 400.0))[..., None], 3, axis=2).astype(np.float64)
    out = heatmap_overlay(img, sal, (40.0, 400.0), alpha=0.6, threshold=0.4)
    low = sal < 0.4
    np.testing.assert_array_equal(out[low], np.round(gray[low] * 255).astype(np.uint8))
    colours = matplotlib.colormaps[SALIENCY_CMAP](sal)[..., :3]
    want = np.round((0.4 * gray + 0.6 * colours) * 255).astype(np.uint8)
    np.testing.assert_array_equal(out[~low], want[~low])
    assert SALIENCY_CMAP == "inferno"
    full = heatmap_overlay(img, sal, (40.0, 400.0), alpha=1.0, threshold=0.0)
    np.testing.assert_array_equal(full, np.round(colours * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="threshold"):
        heatmap_overlay(img, sal, threshold=1.5)
    with pytest.raises(ValueError, match="does not match"):
        heatmap_overlay(img, sal.T)


def test_heatmap_overlay_contour_is_the_border_of_the_region():
    sal = np.zeros((9, 9))
    sal[2:7, 2:7] = 0.8
    out = heatmap_overlay(np.zeros((9, 9)), sal, (0.5, 1.0), contour=0.5)
    border = contour_mask(sal, 0.5)
    assert border.sum() == 16 and not border[3:6, 3:6].any() and border[2, 2:7].all()
    assert (out[border] == [0, 255, 255]).all()
    assert not (out[~border] == [0, 255, 255]).all(axis=1).any()


def _inferno_pixels(pic: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels within 3 grey levels of a colour of the inferno map (not the black background)."""
    cmap = (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.int16)
    dist = np.abs(pic[:, :, None, :].astype(np.int16) - cmap[None, None]).max(axis=3).min(axis=2)
    return (dist <= 3) & (pic.astype(np.int16).sum(axis=2) > 30)


def test_labelled_overlay_has_a_colour_bar_and_names_what_it_shows(tmp_path):
    rgb = np.full((64, 64, 3), 40, np.uint8)
    pic = labelled_overlay(rgb, method="LayerCAM, strides 8+16", class_name="lesion", probability=0.87,
                           model="demo_ct2d@abc123", threshold=0.4)
    assert pic.dtype == np.uint8 and pic.ndim == 3 and pic.shape[2] == 3 and pic.shape[1] > pic.shape[0] * 0.9
    right = _inferno_pixels(pic)[:, pic.shape[1] // 2:]
    col = int(np.argmax(right.sum(axis=0)))
    run = right[:, col]
    assert run.sum() > 0.4 * pic.shape[0] * 0.5  # a tall strip of the colour map: the upper part of the bar
    rows = np.flatnonzero(run)
    top, bottom = pic[rows[0], pic.shape[1] // 2 + col], pic[rows[-1], pic.shape[1] // 2 + col]
    assert int(top.astype(int).sum()) > int(bottom.astype(int).sum())  # light (high) at the top
    path = save_overlay_png(tmp_path / "o.png", pic, text={"method": "LayerCAM, strides 8+16", "class": "lesion",
                                                           "probability": "0.87", "model": "demo_ct2d@abc123"})
    with Image.open(path) as im:
        assert im.text == {"method": "LayerCAM, strides 8+16", "class": "lesion", "probability": "0.87",
                           "model": "demo_ct2d@abc123"}
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), pic)


def test_labelled_overlay_text_is_rendered():
    """The text lines change the picture (method, class with probability, model), nothing else does."""
    rgb = np.full((32, 32, 3), 40, np.uint8)
    kw = dict(method="Grad-CAM", class_name="lesion", probability=0.5, model="m")
    base = labelled_overlay(rgb, **kw)
    for key, value in (("method", "Occlusion"), ("class_name", "normal"), ("probability", 0.25), ("model", "x")):
        other = labelled_overlay(rgb, **{**kw, key: value})
        assert other.shape == base.shape and (other != base).any(), key
    np.testing.assert_array_equal(labelled_overlay(rgb, **kw), base)


def test_colour_bar_shows_the_colour_map_and_greys_the_hidden_range():
    import matplotlib

    from medtl.explain import SALIENCY_CMAP, SALIENCY_THRESHOLD, colour_bar

    bar = colour_bar(width=400, height=64)
    assert bar.shape == (64, 400, 3) and bar.dtype == np.uint8
    row = bar[int(64 * (1 - 0.77))]  # the middle of the bar's band (axes 0.62-0.92 from the bottom)
    x0, x1 = int(0.03 * 400) + 2, int(0.97 * 400) - 3
    top = np.array(matplotlib.colormaps[SALIENCY_CMAP](1.0)[:3]) * 255
    assert np.abs(row[x1].astype(float) - top).max() < 12  # the right end is the map's maximum colour
    hidden = row[x0 + 2]
    assert abs(int(hidden[0]) - int(hidden[1])) < 8 and abs(int(hidden[1]) - int(hidden[2])) < 8  # grey
    shown = row[int(x0 + (x1 - x0) * (SALIENCY_THRESHOLD + 1) / 2)]
    assert np.ptp(shown.astype(int)) > 30  # coloured, not grey
