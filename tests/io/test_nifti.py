from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtl.errors import CorruptFileError, ScanError, UnsupportedFormatError
from medtl.io import Scan, load_scan, save_nifti

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def oblique_affine() -> np.ndarray:
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([0.7, 0.8, 2.5])
    aff[:3, 3] = [-12.5, 40.0, 7.25]
    return aff


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_roundtrip_keeps_voxels_affine_and_modality(tmp_path, suffix):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(7, 6, 5)).astype(np.float32)
    scan = Scan(arr, oblique_affine(), modality="CT", metadata={"window_center": 40, "window_width": 400})
    out = save_nifti(scan, tmp_path / f"x{suffix}")
    back = load_scan(out)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-5)
    assert back.modality == "CT" and back.default_window == (40.0, 400.0)
    assert back.format == "nifti"
    img = nib.load(str(out))  # what any other tool sees
    np.testing.assert_allclose(img.affine, scan.affine, atol=1e-5)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1


def test_nibabel_shipped_files_match_nibabel():
    for name in ("anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz"):
        path = NIB_DATA / name
        if not path.exists():
            pytest.skip(f"nibabel wheel lacks {name}")
        img = nib.load(str(path))
        scan = load_scan(path)
        np.testing.assert_allclose(scan.affine, img.affine)
        data = np.asanyarray(img.dataobj)
        np.testing.assert_array_equal(scan.array.reshape(data.shape), data)
        assert scan.spacing == pytest.approx(tuple(img.header.get_zooms()[:3]), rel=1e-5)


def test_sform_and_qform_that_disagree_are_named_and_the_sform_is_used(tmp_path):
    """medtl takes the sform, as nibabel; SimpleITK 2.5 read this very header through its qform (the sform's
    column lengths differ from pixdim), so the two placed the image differently and medtl said nothing."""
    qform = np.diag([-2.0, 2.5, 3.0, 1.0])
    qform[:3, 3] = [10, -20, 5]
    img = nib.Nifti1Image(np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4), None)
    img.set_qform(qform, code=1)
    img.set_sform(oblique_affine(), code=2)
    nib.save(img, tmp_path / "both.nii")
    gap = max(np.linalg.norm((oblique_affine() - qform)[:3] @ [i, j, k, 1])
              for i in (0, 1) for j in (0, 2) for k in (0, 3))
    with pytest.warns(UserWarning) as caught:
        scan = load_scan(tmp_path / "both.nii")
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 'both.nii'}: the header's sform and qform place voxels up to {gap:.3g} mm apart; medtl uses the "
        "sform (as nibabel does), ITK-based tools may use the qform: check which one is right and save the file "
        "with one geometry (e.g. nibabel's set_qform(img.get_sform()))"]
    np.testing.assert_allclose(scan.affine, oblique_affine(), atol=1e-6)


def test_qform_equal_to_the_sform_up_to_its_float32_quaternion_is_not_warned(tmp_path, recwarn):
    scan = Scan(np.zeros((300, 300, 200), np.uint8), oblique_affine())
    back = load_scan(save_nifti(scan, tmp_path / "x.nii.gz"))
    assert not [w for w in recwarn if "qform" in str(w.message)]
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-5)


@pytest.mark.parametrize("gzipped", [False, True])
def test_cifti2_file_is_named_not_called_damaged(tmp_path, gzipped):
    """nibabel's own CIFTI-2 test file read as 'unreadable NIfTI (AttributeError: 'Cifti2Header' object has no
    attribute 'get_data_shape') (check the file is complete; re-export it)'."""
    import gzip
    import shutil

    shipped = NIB_DATA / "row_major.dconn.nii"
    if not shipped.exists():
        pytest.skip("nibabel wheel lacks row_major.dconn.nii")
    path = tmp_path / ("c.dconn.nii.gz" if gzipped else "c.dconn.nii")
    with open(shipped, "rb") as src, (gzip.open(path, "wb") if gzipped else open(path, "wb")) as dst:
        shutil.copyfileobj(src, dst)
    with pytest.raises(UnsupportedFormatError) as info:
        load_scan(path)
    assert str(info.value) == (f"{path}: a CIFTI-2 file (data on brain surface vertices and parcels, no voxel grid), "
                               "not a scan (give the NIfTI volume it was made from)")


def test_nifti_without_sform_or_qform_code_is_pixdim_scaling_of_unknown_orientation(tmp_path):
    """Both codes 0: the standard's method 1 (x = pixdim[1] * i ..., no orientation). medtl returned
    nibabel's ANALYZE affine, mirrored in x (LAS, centred), so a 3D pipeline's reorientation to RAS flipped
    the volume left-right (SimpleITK 2.5 reads the same header as LPS at the origin)."""
    from monai.transforms import Orientationd

    from medtl.transforms.load import LoadScand

    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(arr, np.diag([2.0, 3.0, 4.0, 1.0]))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "analyze_style.nii")
    scan = load_scan(tmp_path / "analyze_style.nii")
    np.testing.assert_array_equal(scan.affine, np.diag([2.0, 3.0, 4.0, 1.0]))
    assert scan.metadata["orientation_known"] is False and scan.summary()["orientation_known"] is False
    np.testing.assert_array_equal(scan.array, arr)
    out = Orientationd(["image"], axcodes="RAS", labels=None)(LoadScand(["image"], spatial_dims=3)({"image": scan}))
    np.testing.assert_array_equal(out["image"].numpy()[0], arr)  # not mirrored


def test_unknown_orientation_survives_a_round_trip_through_nifti(tmp_path):
    """A DICOM file without ImageOrientationPatient converted to NIfTI read back with orientation_known
    missing, so the viewer and overlays took medtl's assumed identity for the scanner's orientation."""
    arr = np.arange(3 * 4 * 2, dtype=np.uint16).reshape(3, 4, 2)
    scan = Scan(arr, np.diag([0.5, 0.75, 2.0, 1.0]), modality="US",
                metadata={"orientation_known": False, "window_center": -1234.5, "window_width": 4567.25})
    out = save_nifti(scan, tmp_path / "u.nii.gz")
    img = nib.load(str(out))  # other tools see the same affine as before
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    np.testing.assert_array_equal(img.affine, scan.affine)
    back = load_scan(out)
    assert back.metadata["orientation_known"] is False and back.summary()["orientation_known"] is False
    assert back.modality == "US" and back.default_window == (-1234.5, 4567.25)
    np.testing.assert_array_equal(back.affine, scan.affine)
    np.testing.assert_array_equal(back.array, arr)


def test_truncated_nifti_gives_corrupt_file_error(tmp_path):
    good = save_nifti(Scan(np.ones((20, 20, 20), np.float32), np.eye(4)), tmp_path / "g.nii")
    bad = tmp_path / "bad.nii"
    bad.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CorruptFileError, match="bad.nii"):
        load_scan(bad)


def test_save_refuses_wrong_suffix(tmp_path):
    with pytest.raises(ScanError, match=r"\.nii"):
        save_nifti(Scan(np.zeros((2, 2, 2)), np.eye(4)), tmp_path / "x.png")


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    out = tmp_path / "keep.nii.gz"
    save_nifti(Scan(np.full((3, 3, 3), 7, np.int16), np.eye(4)), out)
    before = out.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError):
        save_nifti(Scan(np.zeros((3, 3, 3), np.int16), np.eye(4)), out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]  # no temp file left behind


@pytest.mark.parametrize("volumes", [2, 5])
def test_4d_nifti_of_several_volumes_is_refused_for_a_gray_model_not_mixed(tmp_path, volumes):
    """A 4D file's volumes (time points, b-values) are not RGB: making it gray is a clear ScanError
    naming the file (2 volumes crashed inside the matrix product; 5 gave a mix of the first three)."""
    from medtl.transforms import Preprocessing

    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, volumes), np.float32), np.eye(4)), str(path))
    with pytest.raises(ScanError, match=rf"fmri\.nii\.gz: {volumes} values per voxel .*give one volume"):
        load_scan(path, grayscale=True)
    with pytest.raises(ScanError, match=rf"fmri\.nii\.gz: {volumes} values per voxel"):
        Preprocessing(spatial_dims=3, size=(8, 8, 8), channels=1)(str(path))


def test_rgb24_voxels_become_rgb_channels(tmp_path):
    """nibabel gives RGB24 as a record per voxel, which no float cast takes ('unreadable (TypeError ...)')."""
    rgb = np.random.default_rng(4).integers(0, 255, size=(5, 6, 4, 3), dtype=np.uint8)
    records = rgb.copy().view([("R", "u1"), ("G", "u1"), ("B", "u1")])[..., 0]
    nib.save(nib.Nifti1Image(records, np.eye(4)), tmp_path / "rgb.nii")
    scan = load_scan(tmp_path / "rgb.nii")
    assert scan.photometric == "RGB" and scan.array.dtype == np.uint8
    np.testing.assert_array_equal(scan.array, rgb)


def test_complex_voxels_are_refused_not_cast_to_their_real_part(tmp_path):
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 1 + 2j, np.complex64), np.eye(4)), tmp_path / "c.nii")
    with pytest.raises(ScanError, match=r"c.nii: complex-valued voxels .*save the magnitude image"):
        load_scan(tmp_path / "c.nii")
