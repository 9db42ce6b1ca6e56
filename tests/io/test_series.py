"""DICOM series from folders and zips: ordering, geometry, slice report, selection.

Series are synthesized with pydicom (tiny 16 x 12 slices), so every expected value is
known exactly: positions, pixel values, rescale.
"""

from __future__ import annotations

import random
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from medtl.errors import CorruptFileError, NotAnImageError, ScanError, SeriesError
from medtl.io import Scan
from medtl.io.dicom import list_series, read_dicom, read_series

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
ROWS, COLS = 12, 16
PIXEL_SPACING = (0.7, 0.9)  # (between rows, between columns) as DICOM PixelSpacing


def rotation(deg_x: float, deg_z: float) -> np.ndarray:
    """Rotation about x then z, used to build an oblique ImageOrientationPatient."""
    ax, az = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def write_slice(path: Path, pixels: np.ndarray, *, ipp=None, iop=None, series_uid: str, study_uid: str,
                instance: int, slope: float | None = 1.0, intercept: float | None = -1024.0,
                bits_stored: int = 16, signed: bool = True, modality: str = "CT",
                sop_class: str = CTImageStorage, series_number: int = 1, description: str = "synthetic",
                photometric: str = "MONOCHROME2", slice_thickness: float | None = None) -> None:
    """Write one uncompressed single-frame slice (Explicit VR Little Endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Secret^Patient"
    ds.PatientID = "ID-0042"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = modality, series_number, description
    ds.InstanceNumber = instance
    ds.Manufacturer = "medtl-tests"
    if ipp is not None:
        ds.ImagePositionPatient = [DSfloat(float(v), auto_format=True) for v in ipp]
        ds.ImageOrientationPatient = [DSfloat(float(v), auto_format=True) for v in iop]
        ds.PixelSpacing = list(PIXEL_SPACING)
    if slice_thickness is not None:
        ds.SliceThickness = slice_thickness
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.WindowCenter, ds.WindowWidth = 40, 400
    stored = pixels.astype(np.int16 if signed else np.uint16)
    if bits_stored < 16:  # keep only the stored bits: the reader must sign-extend them
        stored = (stored.view(np.uint16) & np.uint16(2**bits_stored - 1)).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def slice_pixels(k: int) -> np.ndarray:
    """Distinct content per slice and per row/column (so a transpose cannot go unnoticed)."""
    return (np.arange(ROWS * COLS).reshape(ROWS, COLS) + 200 * k - 300).astype(np.int16)


def write_series(folder: Path, n: int = 6, *, spacing: float = 2.5, orientation: np.ndarray | None = None,
                 origin=(-20.0, 15.0, 40.0), offsets: list[float] | None = None, seed: int = 0,
                 series_uid: str | None = None, series_number: int = 1, slopes=None, intercepts=None,
                 bits_stored: int = 16, instance_in_order: bool = False, description: str = "synthetic",
                 ) -> dict:
    """Write a series with scrambled file names, write order and InstanceNumbers.

    Returns the truth in slice order (along the normal): ``positions`` (LPS), ``pixels``
    (stored values, rows x cols), ``slopes``/``intercepts``, ``files`` and the UIDs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rot = rotation(20, 20) if orientation is None else orientation
    row, col = rot[:, 0], rot[:, 1]
    normal = np.cross(row, col)
    offsets = [k * spacing for k in range(n)] if offsets is None else offsets
    positions = [np.asarray(origin) + d * normal for d in offsets]
    slopes = slopes or [1.0] * len(offsets)
    intercepts = intercepts or [-1024.0] * len(offsets)
    rng = random.Random(seed)
    instances = list(range(1, len(offsets) + 1))
    if not instance_in_order:
        rng.shuffle(instances)
    names = [f"IMG{rng.randrange(10**6):06d}_{k}.dcm" for k in range(len(offsets))]
    rng.shuffle(names)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    pixels = []
    for k in range(len(offsets)):
        px = slice_pixels(k)
        if bits_stored == 12:
            px = np.clip(px * 3, -2048, 2047).astype(np.int16)
        pixels.append(px)
    write_order = rng.sample(range(len(offsets)), len(offsets))
    for k in write_order:
        path = folder / names[k]
        write_slice(path, pixels[k], ipp=positions[k], iop=np.r_[row, col], series_uid=series_uid,
                    study_uid=study_uid, instance=instances[k], slope=slopes[k], intercept=intercepts[k],
                    bits_stored=bits_stored, series_number=series_number, description=description)
    files = [folder / names[k] for k in range(len(offsets))]
    return {"positions": positions, "pixels": pixels, "slopes": slopes, "intercepts": intercepts,
            "files": files, "series_uid": series_uid, "row": row, "col": col, "normal": normal}


def world_ras(truth: dict, k: int, i: float, j: float) -> np.ndarray:
    """Where voxel (i, j) of slice k is, from the DICOM definition, in RAS."""
    lps = truth["positions"][k] + i * PIXEL_SPACING[1] * truth["row"] + j * PIXEL_SPACING[0] * truth["col"]
    return LPS_TO_RAS @ lps


def expected_hu(truth: dict, k: int) -> np.ndarray:
    return (truth["pixels"][k].astype(np.float64) * truth["slopes"][k] + truth["intercepts"][k]).T


# ----------------------------------------------------------------------------- ordering and geometry

def test_oblique_scrambled_series_order_values_and_affine(tmp_path):
    truth = write_series(tmp_path / "s", n=7)
    scan = read_series(tmp_path / "s")
    assert scan.shape == (COLS, ROWS, 7)
    assert scan.format == "dicom" and scan.modality == "CT" and scan.photometric == "MONOCHROME2"
    assert scan.array.dtype == np.float32
    for k in range(7):
        np.testing.assert_array_equal(scan.array[:, :, k], expected_hu(truth, k))
        np.testing.assert_allclose(scan.affine @ [0, 0, k, 1], np.r_[world_ras(truth, k, 0, 0), 1], atol=1e-3)
        for i, j in [(COLS - 1, 0), (0, ROWS - 1), (5, 7)]:
            np.testing.assert_allclose((scan.affine @ [i, j, k, 1])[:3], world_ras(truth, k, i, j), atol=1e-3)
    np.testing.assert_allclose(scan.spacing, (PIXEL_SPACING[1], PIXEL_SPACING[0], 2.5), atol=1e-6)
    report = scan.metadata["slice_report"]
    assert report["n_slices"] == 7 and report["spacing"] == pytest.approx(2.5)
    assert not report["uneven_spacing"] and report["missing_slices"] == 0 and report["duplicate_positions"] == 0
    assert scan.metadata["series_uid"] == truth["series_uid"]
    assert scan.metadata["window_center"] == 40 and scan.metadata["window_width"] == 400
    assert "Secret" not in repr(scan.metadata) and "ID-0042" not in repr(scan.metadata)


def test_matches_monai_pydicom_reader_when_instance_numbers_agree(tmp_path):
    """An independent implementation of the same convention (MONAI orders by
    InstanceNumber, so here InstanceNumber follows position)."""
    from monai.transforms import LoadImage

    truth = write_series(tmp_path / "s", n=5, instance_in_order=True)
    scan = read_series(tmp_path / "s")
    img = LoadImage(reader="PydicomReader", image_only=True)(str(tmp_path / "s"))
    np.testing.assert_array_equal(np.asarray(img), scan.array)
    np.testing.assert_allclose(np.asarray(img.affine), scan.affine, atol=1e-4)
    assert len(truth["files"]) == 5


def test_gap_is_reported_as_missing_slice(tmp_path):
    truth = write_series(tmp_path / "s", n=8)
    truth["files"][3].unlink()
    with pytest.warns(UserWarning, match="missing"):
        scan = read_series(tmp_path / "s")
    report = scan.metadata["slice_report"]
    assert report["n_slices"] == 7 and report["missing_slices"] == 1
    assert report["uneven_spacing"] and report["max_spacing_deviation"] == pytest.approx(2.5)
    np.testing.assert_array_equal(scan.array[:, :, 3], expected_hu(truth, 4))


def read_with_one_warning(folder: Path, truth: dict) -> tuple[Scan, str]:
    """The series in ``folder`` and the problems its one warning names (between the series and the pointer
    to the slice report)."""
    with pytest.warns(UserWarning) as caught:
        scan = read_series(folder)
    (message,) = [str(w.message) for w in caught]
    head, tail = f"{folder}: series {truth['series_uid']}: ", " (see metadata['slice_report'])"
    assert message.startswith(head) and message.endswith(tail), message
    return scan, message[len(head):-len(tail)]


def test_gap_warning_says_how_far_the_even_affine_puts_slices_from_their_positions(tmp_path):
    """One slice missing at 7.5 mm: the affine steps 3 mm from 0 to 15 mm, so the slices at 5 and 10 mm
    are placed 1 mm off. The warning said only '1 missing slices'; it now gives the error, which the
    report holds and which is exactly the distance between the affine and the DICOM positions."""
    truth = write_series(tmp_path / "s", offsets=[0, 2.5, 5, 10, 12.5, 15])
    scan, problems = read_with_one_warning(tmp_path / "s", truth)
    assert problems == ("1 missing slices, uneven slice spacing, the affine spaces the 6 slices evenly, so a slice "
                        "lies up to 1 mm from its real position")
    placed = [(scan.affine @ [0, 0, k, 1])[:3] for k in range(6)]
    errors = [np.linalg.norm(placed[k] - LPS_TO_RAS @ truth["positions"][k]) for k in range(6)]
    np.testing.assert_allclose(errors, [0, 0.5, 1, 1, 0.5, 0], atol=1e-6)
    assert scan.metadata["slice_report"]["max_position_error"] == pytest.approx(1.0, abs=1e-6)
    assert scan.metadata["slice_report"]["tilt_degrees"] == pytest.approx(0.0, abs=1e-3)


def write_tilted_series(folder: Path, tilt_deg: float, n: int = 5, spacing: float = 2.5) -> dict:
    """An axial CT series acquired with gantry tilt: each slice ``spacing`` mm further along z and
    ``spacing * tan(tilt)`` mm further along y (LPS), with the axial ImageOrientationPatient."""
    folder.mkdir(parents=True)
    series_uid, study_uid = generate_uid(), generate_uid()
    shift = np.array([0.0, spacing * np.tan(np.deg2rad(tilt_deg)), spacing])
    positions = [np.array([-20.0, 15.0, 40.0]) + k * shift for k in range(n)]
    for k in reversed(range(n)):
        write_slice(folder / f"s{k}.dcm", slice_pixels(k), ipp=positions[k], iop=(1, 0, 0, 0, 1, 0),
                    series_uid=series_uid, study_uid=study_uid, instance=k + 1)
    return {"positions": positions, "series_uid": series_uid, "row": np.array([1.0, 0, 0]),
            "col": np.array([0, 1.0, 0])}


def test_gantry_tilt_keeps_exact_positions_in_a_sheared_affine_and_is_named(tmp_path):
    """Checked against dcm2niix (its untilted output has this sheared sform) and the DICOM positions;
    the tilt was not reported at all."""
    truth = write_tilted_series(tmp_path / "s", 15.0)
    scan, problems = read_with_one_warning(tmp_path / "s", truth)
    assert problems == ("gantry tilt of 15 degrees (the affine is sheared: slices are placed exactly, but tools that "
                        "ignore shear, e.g. ITK/SimpleITK, misplace them)")
    for k in range(5):
        for i, j in [(0, 0), (COLS - 1, 0), (0, ROWS - 1), (5, 7)]:
            np.testing.assert_allclose((scan.affine @ [i, j, k, 1])[:3], world_ras(truth, k, i, j), atol=1e-4)
        np.testing.assert_array_equal(scan.array[:, :, k], expected_hu({"pixels": [slice_pixels(k)] * 5,
                                                                         "slopes": [1.0] * 5,
                                                                         "intercepts": [-1024.0] * 5}, k))
    report = scan.metadata["slice_report"]
    assert report["tilt_degrees"] == pytest.approx(15.0, abs=1e-4) and report["max_position_error"] < 1e-4
    assert report["spacing"] == pytest.approx(2.5) and not report["uneven_spacing"]


def test_uneven_spacing_is_reported(tmp_path):
    write_series(tmp_path / "s", offsets=[0, 2, 4, 7, 9, 11])
    with pytest.warns(UserWarning, match="uneven"):
        scan = read_series(tmp_path / "s")
    report = scan.metadata["slice_report"]
    assert report["uneven_spacing"] and report["max_spacing_deviation"] == pytest.approx(1.0)
    assert report["missing_slices"] == 0 and report["spacing"] == pytest.approx(2.0)


def test_identical_duplicate_is_dropped_and_reported(tmp_path):
    truth = write_series(tmp_path / "s", n=5)
    shutil.copy(truth["files"][2], tmp_path / "s" / "copy_of_slice.dcm")
    with pytest.warns(UserWarning, match="duplicate"):
        scan = read_series(tmp_path / "s")
    assert scan.shape[2] == 5 and scan.metadata["slice_report"]["duplicate_positions"] == 1
    np.testing.assert_array_equal(scan.array[:, :, 2], expected_hu(truth, 2))


def test_duplicate_position_with_other_pixels_is_refused(tmp_path):
    truth = write_series(tmp_path / "s", n=5)
    write_slice(tmp_path / "s" / "other.dcm", slice_pixels(9), ipp=truth["positions"][1],
                iop=np.r_[truth["row"], truth["col"]], series_uid=truth["series_uid"],
                study_uid=generate_uid(), instance=99)
    with pytest.raises(SeriesError, match="share a position"):
        read_series(tmp_path / "s")


def test_mixed_orientations_are_refused(tmp_path):
    truth = write_series(tmp_path / "s", n=4)
    write_slice(tmp_path / "s" / "tilted.dcm", slice_pixels(0), ipp=(0, 0, 0), iop=(1, 0, 0, 0, 0, -1),
                series_uid=truth["series_uid"], study_uid=generate_uid(), instance=50)
    with pytest.raises(SeriesError, match="orientation"):
        read_series(tmp_path / "s")


def test_slices_with_another_pixel_spacing_are_refused(tmp_path):
    import pydicom

    write_series(tmp_path / "s", n=4)
    last = sorted((tmp_path / "s").glob("*.dcm"))[-1]
    ds = pydicom.dcmread(last)
    ds.PixelSpacing = [31.5, 31.5]  # the first slice's 0.7 x 0.9 mm would be claimed for it
    ds.save_as(last)
    with pytest.raises(SeriesError, match=r"1 of 4 slices have another PixelSpacing than the first \(31.5x31.5 "
                                          r"against 0.7x0.9 mm\): not one volume"):
        read_series(tmp_path / "s")


def test_single_slice_uses_thickness_along_normal(tmp_path):
    rot = rotation(20, 20)
    write_slice(tmp_path / "one.dcm", slice_pixels(0), ipp=(1, 2, 3), iop=np.r_[rot[:, 0], rot[:, 1]],
                series_uid=generate_uid(), study_uid=generate_uid(), instance=1, slice_thickness=3.0)
    scan = read_series(tmp_path)
    np.testing.assert_allclose(scan.affine[:3, 2], LPS_TO_RAS @ (3.0 * np.cross(rot[:, 0], rot[:, 1])))
    np.testing.assert_allclose(scan.affine[:3, 3], LPS_TO_RAS @ [1, 2, 3])


def test_series_without_geometry_ordered_by_instance_number(tmp_path):
    uid, study = generate_uid(), generate_uid()
    for k, inst in enumerate([3, 1, 2]):
        write_slice(tmp_path / f"sc{k}.dcm", slice_pixels(inst), series_uid=uid, study_uid=study, instance=inst,
                    slope=None, modality="OT", sop_class=SecondaryCaptureImageStorage)
    scan = read_series(tmp_path)
    assert scan.array.dtype == np.int16
    for k in range(3):
        np.testing.assert_array_equal(scan.array[:, :, k], slice_pixels(k + 1).T)
    np.testing.assert_array_equal(scan.affine, np.eye(4))


# ----------------------------------------------------------------------------- rescale

def test_12bit_signed_with_per_slice_rescale(tmp_path):
    slopes = [1.0, 2.0, 1.0, 0.5]
    intercepts = [-1024.0, 0.0, -1000.0, 100.0]
    truth = write_series(tmp_path / "s", n=4, bits_stored=12, slopes=slopes, intercepts=intercepts)
    assert min(p.min() for p in truth["pixels"]) < 0  # really exercises the sign bit
    scan = read_series(tmp_path / "s")
    assert scan.array.dtype == np.float32 and scan.metadata["rescale_varies"]
    assert scan.metadata["bits_stored"] == 12
    for k in range(4):
        np.testing.assert_array_equal(scan.array[:, :, k], expected_hu(truth, k))


# ----------------------------------------------------------------------------- selection and listing

def _two_series(root: Path) -> tuple[dict, dict]:
    a = write_series(root / "a", n=5, series_number=2, description="big", seed=1)
    b = write_series(root / "nested" / "b", n=3, series_number=1, description="small", seed=2,
                     orientation=np.eye(3))
    return a, b


def test_two_series_default_largest_pick_by_uid_and_index(tmp_path):
    a, b = _two_series(tmp_path)
    (tmp_path / "README.txt").write_text("not dicom\n")
    (tmp_path / "notes.dcm").write_text("a text file renamed .dcm\n")
    listing = list_series(tmp_path)
    assert [d["series_uid"] for d in listing] == [b["series_uid"], a["series_uid"]]  # by SeriesNumber
    assert [d["n_files"] for d in listing] == [3, 5]
    assert [d["index"] for d in listing] == [0, 1]
    assert all(d["is_image"] and d["modality"] == "CT" for d in listing)
    assert [d["description"] for d in listing] == ["small", "big"]
    assert read_series(tmp_path).metadata["series_uid"] == a["series_uid"]
    assert read_series(tmp_path, series=b["series_uid"]).shape == (COLS, ROWS, 3)
    assert read_series(tmp_path, series=0).metadata["series_uid"] == b["series_uid"]
    assert read_series(tmp_path, series="1").metadata["series_uid"] == a["series_uid"]
    with pytest.raises(SeriesError, match="no series '1.2.3'"):
        read_series(tmp_path, series="1.2.3")
    with pytest.raises(SeriesError, match=r"\[1\] CT 'big' 5 files"):
        read_series(tmp_path, series=7)


def test_non_image_objects_are_listed_but_not_picked(tmp_path):
    write_series(tmp_path / "img", n=2)
    shutil.copy(get_testdata_file("rtstruct.dcm"), tmp_path / "rtstruct.dcm")
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "DICOMDIR")
    listing = list_series(tmp_path)
    assert sorted(d["is_image"] for d in listing) == [False, True]  # DICOMDIR is no series
    assert read_series(tmp_path).shape[2] == 2
    rt = next(d for d in listing if not d["is_image"])
    assert rt["modality"] == "RTSTRUCT"
    with pytest.raises(NotAnImageError, match="RT Structure Set"):
        read_series(tmp_path, series=rt["index"])


def test_only_non_image_series_raises(tmp_path):
    shutil.copy(get_testdata_file("rtstruct.dcm"), tmp_path / "a.dcm")
    with pytest.raises(SeriesError, match="no image series"):
        read_series(tmp_path)


def test_empty_or_non_dicom_folder_raises(tmp_path):
    with pytest.raises(SeriesError, match="no DICOM files"):
        read_series(tmp_path)
    (tmp_path / "README").write_text("hello")
    with pytest.raises(SeriesError, match="no DICOM files"):
        read_series(tmp_path)
    assert list_series(tmp_path) == []
    with pytest.raises(SeriesError):
        read_series(tmp_path / "does-not-exist")


def test_text_file_named_dcm_is_skipped_in_folder_and_refused_alone(tmp_path):
    write_series(tmp_path / "s", n=3)
    fake = tmp_path / "s" / "fake.dcm"
    fake.write_text("definitely not DICOM\n" * 20)
    assert read_series(tmp_path / "s").shape[2] == 3
    with pytest.raises(ScanError):
        read_dicom(fake)


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    write_series(tmp_path / "s", n=3)
    read_series(tmp_path / "s", progress=True)
    captured = capsys.readouterr()
    assert "DICOM" in captured.err and captured.out == ""


# ----------------------------------------------------------------------------- zip archives

def _zip_folder(folder: Path, dest: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder.parent).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return dest


def test_zip_loads_like_the_folder(tmp_path):
    a, b = _two_series(tmp_path / "data")
    archive = _zip_folder(tmp_path / "data", tmp_path / "series.zip", {"data/readme.txt": b"hi"})
    from_dir, from_zip = read_series(tmp_path / "data"), read_series(archive)
    np.testing.assert_array_equal(from_zip.array, from_dir.array)
    np.testing.assert_array_equal(from_zip.affine, from_dir.affine)
    assert from_zip.metadata["slice_report"] == from_dir.metadata["slice_report"]
    assert [d["series_uid"] for d in list_series(archive)] == [b["series_uid"], a["series_uid"]]
    assert read_series(archive, series=b["series_uid"]).shape[2] == 3


def test_zip_with_escaping_member_is_refused(tmp_path):
    truth = write_series(tmp_path / "s", n=2)
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(truth["files"][0], "ok/slice.dcm")
        zf.write(truth["files"][1], "../evil.dcm")
    with pytest.raises(CorruptFileError, match="escapes"):
        read_series(archive)
    with pytest.raises(CorruptFileError, match="escapes"):
        list_series(archive)


def test_zip_with_symbolic_link_member_is_refused(tmp_path):
    import stat

    truth = write_series(tmp_path / "s", n=2)
    link = zipfile.ZipInfo("s/link.dcm")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(truth["files"][0], "s/slice.dcm")
        zf.writestr(link, str(truth["files"][1]))
    with pytest.raises(CorruptFileError, match="link.zip: zip member 's/link.dcm' is a symbolic link"):
        read_series(archive)


# ----------------------------------------------------------------------------- lists of files

def test_list_of_files_reads_exactly_like_their_folder(tmp_path):
    truth = write_series(tmp_path / "s", n=6)
    (tmp_path / "s" / "README.txt").write_text("not DICOM")  # skipped in both, as in a folder
    files = [*truth["files"][::-1], tmp_path / "s" / "README.txt"]
    from_dir, from_list = read_series(tmp_path / "s"), read_series(files)
    np.testing.assert_array_equal(from_list.array, from_dir.array)
    assert from_list.array.dtype == from_dir.array.dtype
    np.testing.assert_array_equal(from_list.affine, from_dir.affine)
    assert from_list.metadata == from_dir.metadata
    assert from_list.source == from_dir.source == str(tmp_path / "s")
    assert list_series([str(f) for f in files]) == list_series(tmp_path / "s")


def test_list_reads_only_the_listed_files_of_a_shared_folder(tmp_path):
    a, b = _two_series(tmp_path / "data")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in a["files"] + b["files"]:
        shutil.copy(f, mixed / f.name)
    scan = read_series([mixed / f.name for f in b["files"]])
    assert scan.metadata["series_uid"] == b["series_uid"] and scan.metadata["series_found"] == 1
    np.testing.assert_array_equal(scan.array, read_series(tmp_path / "data" / "nested" / "b").array)


def test_list_with_a_missing_file_names_it_in_one_line(tmp_path):
    truth = write_series(tmp_path / "s", n=3)
    gone = tmp_path / "s" / "gone.dcm"
    with pytest.raises(SeriesError, match=f"^{re.escape(str(gone))}: no such file") as info:
        read_series([*truth["files"], gone])
    assert "\n" not in str(info.value)
    with pytest.raises(SeriesError, match="no files given"):
        read_series([])
    with pytest.raises(SeriesError, match="is a folder"):
        read_series([tmp_path / "s"])
