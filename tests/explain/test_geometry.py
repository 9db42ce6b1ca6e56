"""Saliency back in the scan's own geometry: exact affine, NIfTI round trip, maps land at the right place."""

from __future__ import annotations

import inspect

import nibabel as nib
import numpy as np
import pytest
import torch

from medtl.explain import map_to_scan, prepare, saliency_for_scan, save_saliency_nifti
from medtl.io import Scan, load_scan, save_nifti
from medtl.models import create
from medtl.transforms import Preprocessing

SHAPE = (20, 18, 12)
SPACING = (0.8, 1.1, 2.5)
RAMP = np.array([0.02, -0.03, 0.05])  # intensity gradient per mm of world (RAS) position


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    a, b = [i for i in range(3) if i != axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def _affine(kind: str) -> np.ndarray:
    """Oblique affines, float32-exact (as a NIfTI file holds them).

    ``lps``: i -> patient left, j -> posterior (DICOM-like), rotated 25 deg and 15 deg;
    ``permuted``: a sagittal-like acquisition, i along S, j along A, k along L, rotated.
    """
    axes = {"lps": np.diag([-1.0, -1.0, 1.0]),
            "permuted": np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])}[kind]
    a = np.eye(4)
    a[:3, :3] = _rot(2, 25) @ _rot(0, 15) @ axes @ np.diag(SPACING)
    a[:3, 3] = [30.5, -12.25, 40.0]
    return a.astype(np.float32).astype(np.float64)


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World position (..., 3) of every voxel of a grid of ``shape`` [i, j, k]."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.float64)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _ramp_scan(kind: str) -> Scan:
    a = _affine(kind)
    return Scan(array=(_world(a, SHAPE) @ RAMP + 5.0).astype(np.float32), affine=a, modality="CT", format="nifti")


def _prep(**kw) -> Preprocessing:
    base = dict(spatial_dims=3, size=[16], orientation="RAS", window="none", normalize="none")
    base.update(kw)
    return Preprocessing(**base)


def _network_to_grid_index(shape_net: tuple[int, ...]) -> np.ndarray:
    """Grid index (i', j', k') of every network voxel (d, h, w): the reversed axes."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape_net], indexing="ij"), axis=-1)
    return grid[..., ::-1].astype(np.float64)


def _inside(affine_from: np.ndarray, affine_to: np.ndarray, shape_from, shape_to, margin: float) -> np.ndarray:
    """Voxels of grid ``from`` whose position in grid ``to`` is at least ``margin`` inside it."""
    pos = _world(affine_from, shape_from)
    idx = (pos - affine_to[:3, 3]) @ np.linalg.inv(affine_to[:3, :3]).T
    eps = 1e-9
    return np.all((idx >= margin - eps) & (idx <= np.array(shape_to) - 1 - margin + eps), axis=-1)


@pytest.mark.parametrize("kind", ["lps", "permuted"])
@pytest.mark.parametrize("spacing", [None, [1.5]])
def test_map_to_scan_is_exact_for_a_linear_map(kind, spacing):
    """A map that is linear in world position must come back as that same function on the scan's voxels."""
    scan = _ramp_scan(kind)
    _, x, grid_affine = prepare(_prep(spacing=spacing), scan)
    net_shape = tuple(x.shape[1:])
    world = _world(grid_affine, tuple(reversed(net_shape)))  # [i', j', k'] order
    fake = np.transpose(world @ RAMP + 5.0, (2, 1, 0)).astype(np.float32)  # -> network (D, H, W)
    assert fake.shape == net_shape
    out = map_to_scan(fake, grid_affine, scan)
    assert out.shape == scan.shape
    inside = _inside(scan.affine, grid_affine, scan.shape, tuple(reversed(net_shape)), margin=0.0)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], scan.array[inside], atol=1e-4)


@pytest.mark.parametrize("kind", ["lps", "permuted"])
def test_network_input_grid_is_what_the_affine_says(kind):
    """The preprocessed ramp scan holds, at each network voxel, the ramp at that voxel's world position."""
    scan = _ramp_scan(kind)
    prep = _prep()
    _, x, grid_affine = prepare(prep, scan)
    assert torch.equal(x, prep(scan))  # the same pipeline as prediction, split in two
    grid_shape = tuple(reversed(x.shape[1:]))
    want = _world(grid_affine, grid_shape) @ RAMP + 5.0
    got = np.transpose(x[0].numpy(), (2, 1, 0))
    # Resized smooths before downsampling (anti-aliasing); a linear ramp is kept away from the borders.
    inner = _inside(grid_affine, grid_affine, grid_shape, grid_shape, margin=3.0)
    np.testing.assert_allclose(got[inner], want[inner], atol=2e-3)


@pytest.mark.parametrize("kind", ["lps", "permuted"])
def test_a_blob_lands_where_it_was(kind):
    """Use the preprocessed image of a blob as the 'saliency': back in the scan it peaks on the blob's voxel."""
    a = _affine(kind)
    v0 = np.array([11.3, 7.6, 6.2])
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), axis=-1)
    mm = (idx - v0) * np.array(SPACING)  # distance in mm along the voxel axes
    scan = Scan(array=np.exp(-(mm**2).sum(-1) / (2 * 3.0**2)).astype(np.float32), affine=a)
    _, x, grid_affine = prepare(_prep(window="percentile", percentiles=(0.0, 100.0)), scan)
    out = map_to_scan(x[0].numpy(), grid_affine, scan)
    peak = np.array(np.unravel_index(np.argmax(out), out.shape))
    assert np.all(np.abs(peak - v0) <= 1.0), (peak, v0)
    # intensity-weighted centre of the mapped-back blob, in mm from the true centre
    w = out**4
    centre = (idx * w[..., None]).sum((0, 1, 2)) / w.sum()
    assert np.linalg.norm((centre - v0) * np.array(SPACING)) < min(SPACING)


def test_saliency_nifti_has_exactly_the_scans_affine(tmp_path, one_thread):
    scan_path = tmp_path / "oblique.nii.gz"
    save_nifti(_ramp_scan("lps"), scan_path)
    scan = load_scan(scan_path)
    torch.manual_seed(0)
    model = create("resnet18", weights=None, in_channels=1, spatial_dims=3, num_classes=2)
    prep = Preprocessing(spatial_dims=3, size=[16], orientation="RAS", spacing=[1.5])
    for source in (scan, scan_path):
        sal, info = saliency_for_scan(model, prep, source, method="gradcam")
        assert sal.shape == scan.shape and sal.array.dtype == np.float32
        assert np.array_equal(sal.affine, scan.affine)
        assert sal.modality == "SAL" and sal.metadata["saliency_method"] == "gradcam"
        assert sal.array.min() >= 0.0 and sal.array.max() <= 1.0
        assert set(info) == {"method", "target", "predicted", "probabilities"}
        assert info["target"] == info["predicted"] and abs(sum(info["probabilities"]) - 1) < 1e-5
    out = save_saliency_nifti(sal, tmp_path / "oblique_gradcam.nii.gz")
    written, original = nib.load(out), nib.load(scan_path)
    assert np.array_equal(written.affine, original.affine)
    assert np.array_equal(written.get_sform(), original.get_sform()) and int(written.header["sform_code"]) == 1
    back = load_scan(out)
    assert back.modality == "SAL" and back.shape == scan.shape and np.array_equal(back.affine, scan.affine)
    np.testing.assert_array_equal(back.array, sal.array)


def test_2d_scan_saliency_in_its_geometry(one_thread):
    aff = np.diag([0.5, 0.8, 1.0, 1.0])
    aff[:3, 3] = [-10.0, 4.0, 0.0]
    rng = np.random.default_rng(0)
    scan = Scan(array=rng.random((40, 24, 1)).astype(np.float32), affine=aff, modality="CR")
    prep = Preprocessing(spatial_dims=2, size=[32, 32], window="none", normalize="none")
    _, x, grid_affine = prepare(prep, scan)
    assert tuple(x.shape) == (1, 32, 32)
    # A linear map in world position comes back exactly (2D: the slice axis stays k = 0).
    net = np.stack(np.meshgrid(np.arange(32), np.arange(32), indexing="ij"), axis=-1)[..., ::-1]  # (h, w) -> (i', j')
    world = net @ grid_affine[:2, :2].T + grid_affine[:2, 3]
    fake = (world @ np.array([0.03, -0.02]) + 1.0).astype(np.float32)
    out = map_to_scan(fake, grid_affine, scan)
    assert out.shape == (40, 24, 1)
    scan_world = _world(aff, (40, 24, 1))[..., :2]
    want = scan_world @ np.array([0.03, -0.02]) + 1.0
    inside = _inside(aff, grid_affine, (40, 24, 1), (32, 32, 1), margin=0.0)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], want[inside], atol=1e-4)
    model = create("resnet18", weights=None, in_channels=1, num_classes=2)
    sal, info = saliency_for_scan(model, Preprocessing(spatial_dims=2, size=[64, 64]), scan, "gradcam++")
    assert sal.shape == scan.shape and np.array_equal(sal.affine, scan.affine) and info["method"] == "gradcam++"


def test_saliency_for_scan_defaults_to_the_measured_default_method(one_thread):
    """Like :func:`saliency`, the app, the predictor and PACS: it defaulted to Grad-CAM instead."""
    from medtl.explain import DEFAULT_METHOD, saliency

    scan = Scan(array=np.random.default_rng(0).random((32, 32, 1)).astype(np.float32), affine=np.eye(4), modality="CR")
    model = create("resnet18", weights=None, in_channels=1, num_classes=2)
    sal, info = saliency_for_scan(model, Preprocessing(spatial_dims=2, size=[32, 32]), scan)
    assert info["method"] == DEFAULT_METHOD == inspect.signature(saliency).parameters["method"].default
    assert sal.metadata["saliency_method"] == DEFAULT_METHOD


@pytest.mark.shared
@pytest.mark.parametrize("name, dims", [("emri_small.dcm", 3), ("US1_UNCR.dcm", 2)])
def test_real_dicom_saliency_in_scan_geometry(shared, name, dims, one_thread):
    """Real files: an enhanced multi-frame MR volume, and an RGB ultrasound picture for a gray 2D model."""
    path = shared(f"data/dicom/{name}")
    scan = load_scan(path)
    torch.manual_seed(0)
    model = create("resnet18", weights=None, in_channels=1, spatial_dims=dims, num_classes=2)
    prep = Preprocessing(spatial_dims=dims, size=[16] if dims == 3 else [64, 64])
    sal, _ = saliency_for_scan(model, prep, path, "gradcam")
    assert sal.shape == scan.shape and np.array_equal(sal.affine, scan.affine)
    assert sal.array.ndim == 3 and 0.0 <= sal.array.min() and sal.array.max() <= 1.0


def test_package_example_runs_as_written():
    """The ``medtl.explain`` docstring's example, on the sample CT volume with an untrained 3D ResNet."""
    import doctest

    import medtl.explain as package

    assert doctest.testmod(package).failed == 0
