"""Tests of the synthetic sample cohort (medtl.demo.cohort).

Files are read with pydicom / nibabel / PIL directly (not medtl.io), so these
tests check the data itself, independently of medtl's loaders.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from scipy import ndimage

from medtl.demo import cohort as sd
from medtl.errors import MedtlError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """The small cohort, seed 0, generated once for this module."""
    return sd.make_cohort(tmp_path_factory.mktemp("cohort"), "small", seed=0).parent


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _pixel(ds: pydicom.Dataset, x: float, y: float) -> tuple[int, int]:
    """(row, column) of LPS point (x, y) on an axial slice, from the geometry tags."""
    ipp = [float(v) for v in ds.ImagePositionPatient]
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    return round((y - ipp[1]) / row_mm), round((x - ipp[0]) / col_mm)


def _patch(img: np.ndarray, r: int, c: int, half: int) -> np.ndarray:
    return img[r - half : r + half + 1, c - half : c + half + 1]


def _series(folder: Path) -> list[pydicom.Dataset]:
    """Slices of a series folder sorted by position along the slice normal (+z)."""
    return sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2]))


def _lesion_contrast(values: np.ndarray, mask: np.ndarray, ring_px: int) -> float:
    """Mean inside the mask minus mean in a ring of ``ring_px`` around it."""
    ring = ndimage.binary_dilation(mask, iterations=ring_px) & ~mask
    return float(values[mask].mean() - values[ring].mean())


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(cohort, tmp_path):
    again = tmp_path / "again"
    assert sd.main([str(again), "--size", "small", "--seed", "0", "--quiet"]) == 0
    files = _files(cohort)
    assert files == _files(again)
    assert len(files) > 150
    for rel in files:
        assert (cohort / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_other_seed_changes_pixels_not_plan(cohort, tmp_path):
    other = sd.make_cohort(tmp_path / "s1", "small", seed=1).parent
    assert (other / "manifest.csv").read_bytes() == (cohort / "manifest.csv").read_bytes()
    a = pydicom.dcmread(cohort / "ct2d" / "P0001_1.dcm")
    b = pydicom.dcmread(other / "ct2d" / "P0001_1.dcm")
    assert not np.array_equal(a.pixel_array, b.pixel_array)
    assert a.SOPInstanceUID != b.SOPInstanceUID


def test_regenerating_removes_only_previous_cohort_files(tmp_path):
    (tmp_path / "series" / "P9999").mkdir(parents=True)
    (tmp_path / "series" / "P9999" / "IM0001.dcm").write_bytes(b"x")
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "P9998.png").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "manifest.csv").write_text(
        "path,label,split,patient_id,site,mask,kind\n"
        "series/P9999,0,train,P9999,A,,series\npng/P9998.png,1,test,P9998,B,,png\n"
    )
    sd._remove_previous(tmp_path)
    assert not (tmp_path / "series" / "P9999").exists()
    assert not (tmp_path / "png" / "P9998.png").exists()
    assert not (tmp_path / "manifest.csv").exists()
    assert (tmp_path / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------- manifest


def test_manifest_schema(cohort):
    with (cohort / "manifest.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert tuple(header) == sd.MANIFEST_COLUMNS
    rows = _rows(cohort)
    counts = Counter(r["kind"] for r in rows)
    assert counts == {"ct2d": 40, "ct3d": 10, "series": 4, "png": 10}
    for r in rows:
        assert r["kind"] in sd.KINDS
        assert r["label"] in ("0", "1")
        assert r["split"] in ("train", "val", "test")
        assert r["site"] in sd.SITES
        assert re.fullmatch(r"P\d{4}", r["patient_id"])
        assert not Path(r["path"]).is_absolute() and (cohort / r["path"]).exists()
        if r["kind"] == "series":
            assert (cohort / r["path"]).is_dir()
        if r["label"] == "1":
            assert r["mask"] and (cohort / r["mask"]).is_file()
        else:
            assert r["mask"] == ""


def test_splits_are_patient_disjoint_balanced_and_site_b_is_test_only(cohort):
    rows = _rows(cohort)
    splits_of = defaultdict(set)
    labels = defaultdict(list)
    for r in rows:
        splits_of[r["patient_id"]].add(r["split"])
        labels[(r["kind"], r["site"], r["split"])].append(int(r["label"]))
    assert all(len(s) == 1 for s in splits_of.values())
    assert max(Counter(r["patient_id"] for r in rows).values()) == 2  # training patients: 2 slices
    for key, group in labels.items():
        assert sum(group) * 2 == len(group), key
    assert {r["split"] for r in rows if r["site"] == "B"} == {"test"}
    assert {r["split"] for r in rows if r["site"] == "A"} == {"train", "val", "test"}


def test_readme_describes_license_and_regeneration(cohort):
    text = (cohort / "README.md").read_text()
    assert "CC0" in text
    assert "python -m medtl.demo.cohort sample_data --size small --seed 0" in text


# ---------------------------------------------------------------------- ct2d


def _check_landmarks(found: list[dict], mottled: bool) -> None:
    """Lung, spine and air landmarks hold their tissue (patch medians in HU; ``lung`` is the lower
    of the two lung points, ``normal_lung`` the higher one on a normal case). Checked on every
    slice, except on a site with mottle (noise correlated over ~6 mm, as large as a patch), where
    one patch can be mostly noise: there the mean over the site's slices (independent noise) is checked."""
    groups = [found] if mottled else [[f] for f in found]
    for group in groups:
        where = ", ".join(f["path"] for f in group)
        normal = [f["normal_lung"] for f in group if f["normal_lung"] is not None]
        assert np.mean([f["lung"] for f in group]) < -500, where
        assert not normal or np.mean(normal) < -500, where
        assert np.mean([f["spine"] for f in group]) > 300, where
        assert np.mean([f["air"] for f in group]) < -800, where


def test_ct2d_dicom_tags_hu_and_anatomy(cohort):
    syntaxes = Counter()
    sops = set()
    landmarks: dict[str, list[dict]] = defaultdict(list)
    for r in (r for r in _rows(cohort) if r["kind"] == "ct2d"):
        ds = pydicom.dcmread(cohort / r["path"])
        site = sd.SITES[r["site"]]
        syntaxes[ds.file_meta.TransferSyntaxUID] += 1
        sops.add(ds.SOPInstanceUID)
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.Manufacturer == site.manufacturer
        assert ds.Rows == ds.Columns == site.ct2d_matrix
        assert [float(v) for v in ds.PixelSpacing] == [site.ct2d_spacing] * 2
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == -1024
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40, 400)
        assert ds.BitsAllocated == 16 and ds.BitsStored == (12 if r["site"] == "A" else 16)
        assert ds.PixelRepresentation == (0 if r["site"] == "A" else 1)
        assert ds.PatientID == r["patient_id"]
        hu = _hu(ds)
        assert hu.shape == (ds.Rows, ds.Columns)
        lungs = [np.median(_patch(hu, *_pixel(ds, *sd.LANDMARKS_MM[k]), 2)) for k in ("right_lung", "left_lung")]
        landmarks[r["site"]].append({
            "path": r["path"], "lung": min(lungs), "normal_lung": max(lungs) if r["label"] == "0" else None,
            "spine": np.median(_patch(hu, *_pixel(ds, *sd.LANDMARKS_MM["spine"]), 1)),
            "air": np.median(_patch(hu, *_pixel(ds, *sd.LANDMARKS_MM["air"]), 2))})
    for site, found in landmarks.items():
        _check_landmarks(found, mottled=bool(sd.SITES[site].mottle_hu))
    assert set(syntaxes) == {ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless}
    assert min(syntaxes.values()) >= 10
    assert len(sops) == 40


def test_compressed_ct2d_is_lossless(cohort):
    """Re-encoding the decoded pixels uncompressed gives the same array, and the
    J2K and RLE files hold values on the full 12-bit stored range."""
    for r in (r for r in _rows(cohort) if r["kind"] == "ct2d"):
        ds = pydicom.dcmread(cohort / r["path"])
        if ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian:
            continue
        arr = ds.pixel_array
        ds.decompress()
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        np.testing.assert_array_equal(ds.pixel_array, arr)
        assert arr.min() >= 0 and arr.max() <= 4095


def test_ct2d_masks_mark_the_lesion(cohort):
    for r in (r for r in _rows(cohort) if r["kind"] == "ct2d" and r["label"] == "1"):
        hu = _hu(pydicom.dcmread(cohort / r["path"]))
        mask = np.asarray(Image.open(cohort / r["mask"]))
        assert mask.shape == hu.shape and set(np.unique(mask)) == {0, 255}
        assert mask.sum() // 255 >= 30  # radius >= 12 mm at <= 3.2 mm pixels
        assert _lesion_contrast(hu, mask > 0, 3) > 300, r["path"]


def test_site_b_is_noisier(cohort):
    """Noise measured in air. Site B's low-dose mottle sits on an HU scale 10 % low (air at -900),
    so part of it clips at the stored minimum (-1024 HU) and an air patch can read nearly flat:
    compared as the typical slice, not slice by slice."""
    def air_std(r):
        ds = pydicom.dcmread(cohort / r["path"])
        return float(_patch(_hu(ds), *_pixel(ds, *sd.LANDMARKS_MM["air"]), 4).std())

    rows = [r for r in _rows(cohort) if r["kind"] == "ct2d"]
    std_a = [air_std(r) for r in rows if r["site"] == "A"]
    std_b = [air_std(r) for r in rows if r["site"] == "B"]
    assert np.median(std_b) > 4 * max(std_a)
    assert np.median(std_b) > 2 * np.median(std_a)


# ----------------------------------------------------------------- volumes


def _hu_at(img: nib.Nifti1Image, data: np.ndarray, lps: tuple[float, float, float], half_z: int = 0) -> float:
    """Median of the 3 x 3 voxels around an LPS point, over ``half_z`` slices either side too."""
    ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
    i, j, k = np.rint(np.linalg.solve(img.affine, ras)[:3]).astype(int)
    return float(np.median(data[i - 1 : i + 2, j - 1 : j + 2, k - half_z : k + half_z + 1]))


def _half_z(site: sd.SiteProfile) -> int:
    """Slices either side for a landmark median: 0, or +-40 mm on a site with mottle (independent per slice;
    the landmarks hold for |z| <= 75 mm)."""
    return int(40.0 // site.vol_spacing[2]) if site.mottle_hu else 0


def test_nifti_volumes_are_ras_with_site_spacing(cohort):
    storages = set()
    for r in (r for r in _rows(cohort) if r["kind"] == "ct3d"):
        img = nib.load(cohort / r["path"])
        site = sd.SITES[r["site"]]
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), site.vol_spacing)
        np.testing.assert_allclose(img.header.get_zooms(), site.vol_spacing)
        assert img.shape == site.vol_shape
        assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
        np.testing.assert_allclose(img.get_qform(), img.affine)
        storages.add((img.get_data_dtype().name, float(img.dataobj.inter)))
        data = img.get_fdata()
        # Volume centre is the world origin.
        centre = img.affine @ np.r_[(np.array(img.shape) - 1) / 2.0, 1.0]
        np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)
        hz = _half_z(site)
        lungs = [_hu_at(img, data, (*sd.LANDMARKS_MM[k], 0.0), hz) for k in ("right_lung", "left_lung")]
        assert min(lungs) < -500
        assert _hu_at(img, data, (*sd.LANDMARKS_MM["spine"], 0.0), hz) > 300
        assert _hu_at(img, data, (*sd.LANDMARKS_MM["air"], 0.0), hz) < -800
        if r["label"] == "1":
            mask_img = nib.load(cohort / r["mask"])
            np.testing.assert_allclose(mask_img.affine, img.affine)
            mask = np.asarray(mask_img.dataobj) > 0
            assert mask.shape == img.shape and mask.sum() >= 20
            assert _lesion_contrast(data, mask, 2) > 300, r["path"]
    assert storages == {("int16", 0.0), ("uint16", -1024.0)}


def test_dicom_series_geometry_and_mask(cohort):
    syntaxes = set()
    for r in (r for r in _rows(cohort) if r["kind"] == "series"):
        site = sd.SITES[r["site"]]
        slices = _series(cohort / r["path"])
        nx, ny, nz = site.vol_shape
        assert len(slices) == nz
        assert len({d.SeriesInstanceUID for d in slices}) == 1
        assert len({d.FrameOfReferenceUID for d in slices}) == 1
        assert len({d.SOPInstanceUID for d in slices}) == nz
        syntaxes.add(slices[0].file_meta.TransferSyntaxUID)
        z = np.array([float(d.ImagePositionPatient[2]) for d in slices])
        np.testing.assert_allclose(np.diff(z), site.vol_spacing[2])
        assert all(float(d.SliceThickness) == site.vol_spacing[2] for d in slices)
        # InstanceNumber runs head to feet, i.e. against +z: sorting by it reverses the volume.
        assert [int(d.InstanceNumber) for d in slices] == list(range(nz, 0, -1))
        vol = np.stack([_hu(d) for d in slices])  # [z, row, col]
        assert vol.shape == (nz, ny, nx)
        mid = slices[nz // 2]
        hz = _half_z(site)
        row, col = _pixel(mid, *sd.LANDMARKS_MM["spine"])
        assert np.median(vol[nz // 2 - hz : nz // 2 + hz + 1, row - 1 : row + 2, col - 1 : col + 2]) > 300
        if r["label"] == "1":
            mask_img = nib.load(cohort / r["mask"])
            assert nib.aff2axcodes(mask_img.affine) == ("L", "P", "S")
            mask = np.asarray(mask_img.dataobj) > 0
            assert mask.shape == (nx, ny, nz)
            # Mask voxel (i, j, k) is DICOM pixel (row j, column i) of sorted slice k:
            # the same world point from both geometries.
            i, j, k = np.argwhere(mask)[0]
            ras = mask_img.affine @ np.array([i, j, k, 1.0])
            d = slices[k]
            ps = [float(v) for v in d.PixelSpacing]
            lps = np.array([float(v) for v in d.ImagePositionPatient]) + [i * ps[1], j * ps[0], 0.0]
            np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)
            assert _lesion_contrast(vol, mask.transpose(2, 1, 0), 2) > 300, r["path"]
    assert syntaxes == {ExplicitVRLittleEndian, RLELossless}


# ---------------------------------------------------------------------- png


def test_pngs_and_their_masks(cohort):
    modes = Counter()
    for r in (r for r in _rows(cohort) if r["kind"] == "png"):
        with Image.open(cohort / r["path"]) as im:
            modes[im.mode] += 1
            img = np.asarray(im).astype(np.float64) / (1.0 if im.mode == "L" else 257.0)
        side = sd.SITES[r["site"]].png_matrix
        assert img.shape == (side, side)
        # X-ray-like: the spine column is brighter than the lung fields.
        assert img[:, side // 2].mean() > img[:, side // 4].mean() + 20
        if r["label"] == "1":
            mask = np.asarray(Image.open(cohort / r["mask"])) > 0
            assert mask.shape == img.shape and mask.sum() >= 30
            assert _lesion_contrast(img, mask, 3) > 5, r["path"]
    assert modes["L"] == 9 and sum(modes.values()) == 10  # one 16-bit file


# ------------------------------------------------------------------- lookup


def test_sample_path_names(monkeypatch, cohort):
    monkeypatch.setattr(sd, "_repo_sample_dir", lambda: cohort)
    assert sd.sample_dir() == cohort
    expected = {"ct2d": ExplicitVRLittleEndian, "ct2d_rle": RLELossless, "ct2d_j2k": JPEG2000Lossless}
    for name, syntax in expected.items():
        assert pydicom.dcmread(sd.sample_path(name)).file_meta.TransferSyntaxUID == syntax
    assert sd.sample_path("ct3d").name.endswith(".nii.gz")
    assert sd.sample_path("series").is_dir()
    with Image.open(sd.sample_path("png")) as im:
        assert im.mode == "L"
    with Image.open(sd.sample_path("png16")) as im:
        assert im.mode.startswith("I")
    assert sd.sample_path("manifest") == cohort / "manifest.csv"
    with pytest.raises(ValueError, match="unknown sample"):
        sd.sample_path("mri")


def test_sample_dir_generates_into_cache_once(monkeypatch, tmp_path):
    monkeypatch.setattr(sd, "_repo_sample_dir", lambda: tmp_path / "no-repo")
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path / "cache"))
    first = sd.sample_dir()
    assert first == tmp_path / "cache" / "sample_data" / f"v{sd.GENERATOR_VERSION}"
    stamp = (first / "manifest.csv").stat().st_mtime_ns
    assert sd.sample_dir() == first
    assert (first / "manifest.csv").stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp folder left


def test_bad_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="size must be one of"):
        sd.make_cohort(tmp_path, "huge")


def _decoded(path: Path):
    """Content of a cohort file independent of codec versions."""
    if path.suffix == ".dcm":
        ds = pydicom.dcmread(path)
        return ds.pixel_array, str(ds.SOPInstanceUID), [float(v) for v in ds.ImagePositionPatient]
    if path.name.endswith(".nii.gz"):
        img = nib.load(path)
        return np.asarray(img.dataobj), img.affine
    if path.suffix == ".png":
        with Image.open(path) as im:
            return np.asarray(im)
    return path.read_bytes()


def test_committed_copy_matches_generator(cohort):
    """sample_data/ in the repo is what ``make_cohort(size="small", seed=0)`` writes."""
    committed = REPO / "sample_data"
    if not (committed / "manifest.csv").is_file():
        pytest.skip("no committed sample_data/ in this checkout")
    assert _files(committed) == _files(cohort)
    for rel in _files(cohort):
        a, b = _decoded(committed / rel), _decoded(cohort / rel)
        if isinstance(a, tuple):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y, err_msg=str(rel))
        else:
            np.testing.assert_array_equal(a, b, err_msg=str(rel))


def test_write_without_lesion_changes_only_the_lesion(cohort, tmp_path):
    """The same patients without their nodule: same files, encodings and noise; pixels differ only near the lesion."""
    rows = [r for r in _rows(cohort) if r["label"] == "1" and r["kind"] in ("ct2d", "ct3d", "series", "png")]
    picked = {kind: next(r for r in rows if r["kind"] == kind) for kind in ("ct2d", "ct3d", "series", "png")}
    # a ct2d patient late in the plan, so the transfer-syntax counter has moved on
    picked["ct2d_late"] = [r for r in rows if r["kind"] == "ct2d"][-1]
    manifest = sd.write_without_lesion(tmp_path, [r["patient_id"] for r in picked.values()], size="small")
    written = {r["path"]: r for r in _rows(tmp_path)}
    for r in picked.values():
        assert written[r["path"]]["label"] == "1" and written[r["path"]]["mask"] == ""
        if r["kind"] == "series":
            a = np.stack([ds.pixel_array for ds in _series(cohort / r["path"])]).astype(np.int32)
            b = np.stack([ds.pixel_array for ds in _series(tmp_path / r["path"])]).astype(np.int32)
            mask = np.asarray(nib.load(cohort / r["mask"]).dataobj).transpose(2, 1, 0) > 0  # [k, row, column]
        elif r["kind"] == "ct2d":
            da, db = pydicom.dcmread(cohort / r["path"]), pydicom.dcmread(tmp_path / r["path"])
            assert da.file_meta.TransferSyntaxUID == db.file_meta.TransferSyntaxUID
            a, b = da.pixel_array.astype(np.int32), db.pixel_array.astype(np.int32)
            mask = np.asarray(Image.open(cohort / r["mask"])) > 0
        elif r["kind"] == "ct3d":
            a = np.asarray(nib.load(cohort / r["path"]).dataobj).astype(np.int32)
            b = np.asarray(nib.load(tmp_path / r["path"]).dataobj).astype(np.int32)
            mask = np.asarray(nib.load(cohort / r["mask"]).dataobj) > 0
        else:
            a = np.asarray(Image.open(cohort / r["path"])).astype(np.int32)
            b = np.asarray(Image.open(tmp_path / r["path"])).astype(np.int32)
            mask = np.asarray(Image.open(cohort / r["mask"])) > 0
        assert a.shape == b.shape == mask.shape, r["kind"]
        near = ndimage.binary_dilation(mask, iterations=6)
        assert (a[~near] == b[~near]).all(), r["kind"]
        assert a[mask].mean() > b[mask].mean(), r["kind"]  # the nodule (+30..+60 HU in lung) is gone
    assert manifest == tmp_path / "manifest.csv"
    with pytest.raises(ValueError, match="not patients"):
        sd.write_without_lesion(tmp_path, ["P9999"], size="small")


@pytest.mark.parametrize("name", ["manifest.csv", "README.md"])
def test_a_users_manifest_and_the_files_it_lists_are_never_touched(tmp_path, name):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "case1.dcm").write_bytes(b"a patient's image")
    (tmp_path / name).write_text("path,label\nimages/case1.dcm,1\n")
    with pytest.raises(MedtlError, match=rf"^{tmp_path / name}: exists and was not written by medtl sample-data"):
        sd.make_cohort(tmp_path, "small")
    assert (tmp_path / "images" / "case1.dcm").read_bytes() == b"a patient's image"
    assert (tmp_path / name).read_text() == "path,label\nimages/case1.dcm,1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["images", name])


def test_ct_slices_carry_the_type_2_attributes_of_the_ct_image_module(cohort):
    """dciodvfy found AcquisitionNumber missing in every sample CT slice."""
    for path in sorted(cohort.rglob("*.dcm"))[:20]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("AcquisitionNumber", "KVP", "PatientPosition", "SliceThickness"):
            assert keyword in ds, (path, keyword)
