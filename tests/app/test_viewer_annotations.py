"""What the viewer writes on and around the image, as pure functions: orientation letters from the
affine, slice position in mm, the scale bar from the true spacing, the pointer readout, the modality
shown for a NIfTI, the study header read from DICOM tags (and kept out of the Scan)."""

import numpy as np
import pytest

from medtl.app import viewer as V
from medtl.app.study import header_markdown, study_header
from medtl.demo.cohort import sample_path
from medtl.explain import display_aspect, display_slice
from medtl.io import Scan, load_scan

SHAPE = (4, 5, 6)
SPACING = (1.0, 2.0, 3.0)


def ras(array=None, modality="CT", fmt="nifti"):
    a = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) if array is None else array
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-10.0, -20.0, -30.0)
    return Scan(a, affine, modality=modality, format=fmt)


def lps(scan):
    """The same patient stored in DICOM (LPS) voxel order."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = SHAPE[0] - 1, SHAPE[1] - 1
    return Scan(scan.array[::-1, ::-1].copy(), scan.affine @ flip, modality="CT", format="dicom")


RADIOLOGICAL = {
    "axial": {"top": "A", "bottom": "P", "left": "R", "right": "L"},  # patient's left on the image's right
    "coronal": {"top": "S", "bottom": "I", "left": "R", "right": "L"},
    "sagittal": {"top": "S", "bottom": "I", "left": "A", "right": "P"},
}


@pytest.mark.parametrize("plane", V.PLANES)
@pytest.mark.parametrize("stored", ["RAS NIfTI", "LPS DICOM series"])
def test_orientation_letters_follow_the_affine(plane, stored):
    scan = ras() if stored == "RAS NIfTI" else lps(ras())
    assert V.orientation_letters(V.for_display(scan), plane) == RADIOLOGICAL[plane]


def test_orientation_letters_of_a_2d_slice_and_of_a_plain_picture():
    # a 2D DICOM slice is shown as stored: rows along +j (posterior in LPS), columns along +i (patient left)
    lps_slice = Scan(np.zeros((8, 8, 1)), np.diag([-0.7, -0.7, 2.5, 1.0]), modality="CT", format="dicom")
    assert V.orientation_letters(V.for_display(lps_slice), "axial") == RADIOLOGICAL["axial"]
    # a coronal slice stored as a 2D image (rows go down = inferior, columns go to the patient's left)
    coronal = np.array([[-1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    assert V.orientation_letters(Scan(np.zeros((8, 8, 1)), coronal, format="dicom"), "axial") == \
        RADIOLOGICAL["coronal"]
    assert V.orientation_letters(Scan(np.zeros((8, 8, 1)), np.eye(4), format="image"), "axial") is None


def test_slice_position_in_mm():
    disp = V.for_display(ras())
    # axial slice k of the RAS volume is at z = -30 + 3 k mm: k=0 -> 30 mm inferior, k=5 -> 15 mm inferior
    assert V.slice_position(disp, "axial", 0) == ("I", 30.0)
    assert V.slice_position(disp, "axial", 5) == ("I", 15.0)
    up = ras()
    up.affine[2, 3] = 10.0
    assert V.slice_position(V.for_display(up), "axial", 5) == ("S", 25.0)
    # coronal slices of the display (LPS) volume step posterior: index 0 is the most anterior (y = -20 + 2*4)
    assert V.slice_position(disp, "coronal", 0) == ("P", 12.0)
    unknown = ras()
    unknown.metadata["spacing_known"] = False
    assert V.slice_position(V.for_display(unknown), "axial", 0) is None


def test_scale_bar_uses_the_true_spacing():
    disp = V.for_display(ras())
    rgb = V.render(disp, "axial", 0, (0, 100))
    mm_px = V.display_mm_per_pixel(disp, "axial", rgb.shape[:2])
    assert mm_px == pytest.approx(4 * 1.0 / rgb.shape[1])  # 4 columns of 1 mm across the picture
    assert V.scale_bar(0.5, 512) == (50.0, 100)  # 50 mm at 0.5 mm/px = 100 px <= a quarter of 512
    assert V.scale_bar(0.7, 512) == (50.0, 71)
    assert V.scale_bar(4.5 * 64 / 384, 384) == (50.0, 67)  # the 64 x 4.5 mm sample volume: 288 mm across 384 px
    assert V.scale_bar(0.2, 40) == (2.0, 10)
    assert V.scale_bar(None, 512) is None and V.scale_bar(1000.0, 100) is None
    unknown = ras()
    unknown.metadata["spacing_known"] = False
    assert V.display_mm_per_pixel(unknown, "axial", (10, 10)) is None
    drawn = V.draw_scale_bar(np.zeros((100, 200, 3), np.uint8), 50)
    cols = np.flatnonzero(drawn[100 - 12 - 2, :, 0] == 255)
    assert cols.min() == 200 - 12 - 50 and cols.max() == 200 - 12 - 1  # exactly 50 px long


@pytest.mark.parametrize("plane", V.PLANES)
def test_readout_is_the_voxel_under_the_pointer(plane):
    disp = V.for_display(lps(ras()))
    for index in range(V.n_slices(disp, plane)):
        picture = display_slice(disp.array, index, plane)
        size = V.display_size(picture.shape[:2], display_aspect(disp, plane))
        for r in range(picture.shape[0]):
            for c in range(picture.shape[1]):
                # the middle of the drawn block that shows picture pixel (r, c)
                row, col = (r + 0.5) * size[0] / picture.shape[0], (c + 0.5) * size[1] / picture.shape[1]
                voxel = V.picture_to_voxel(disp, plane, index, size, row, col)
                assert disp.array[voxel] == picture[r, c]
    assert V.picture_to_voxel(disp, plane, 0, size, -1, 0) is None
    assert V.readout(disp, plane, 0, size, size[0], 0) == ""


def test_readout_says_hu_for_ct_only():
    disp = V.for_display(ras())
    assert V.readout(disp, "axial", 0, (5, 4), 0, 0, is_ct=True).startswith(f"{disp.array[0, 0, 0]:.0f} HU at voxel")
    assert "HU" not in V.readout(disp, "axial", 0, (5, 4), 0, 0, is_ct=False)


def test_modality_shown_for_a_nifti():
    nifti = ras(modality="OT")
    assert V.display_modality(nifti, ["CT"], is_ct=True).startswith("CT (not recorded in the file")
    assert V.display_modality(nifti, [], is_ct=True) == "not recorded in the file"
    assert V.display_modality(nifti, ["MR"], is_ct=False) == "not recorded in the file"
    assert V.display_modality(ras(modality="MR"), ["CT"], is_ct=True) == "MR"  # the file's own wins


def test_unknown_spacing_is_said_not_one_mm():
    scan = ras()
    scan.metadata.update(spacing_known=False, spacing_note="pixel size not in the file, 1 mm assumed")
    rows = dict(V.scan_facts(scan.summary()))
    assert rows["Spacing"].startswith("unknown") and "1 × 1" not in rows["Spacing"]
    assert dict(V.scan_facts(ras().summary()))["Spacing"] == "1 × 2 × 3 mm"


def test_study_header_from_dicom_tags_not_from_the_scan():
    dcm = sample_path("ct2d")
    header = study_header(dcm)
    assert header["Patient"] and header["Patient ID"] and header["Study date"].count("-") == 2
    assert "Series" in header
    assert header["Patient ID"] not in str(load_scan(dcm).summary().get("series_description", ""))
    assert "**Patient:**" in header_markdown(header) and header_markdown({}) == ""
    assert study_header(sample_path("ct3d")) == {}  # NIfTI: no header


def _no_geometry_dicom(path, frames=1, patient_orientation=None):
    """pydicom's MR_small without ImagePositionPatient/ImageOrientationPatient (as ultrasound, secondary
    capture and many radiographs are), ``frames`` frames of a pattern that tells every flip apart."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    pixels = np.stack([np.arange(64 * 64).reshape(64, 64) + 5000 * k for k in range(frames)]).astype(np.int16)
    if frames > 1:
        ds.NumberOfFrames = frames
    if patient_orientation:
        ds.PatientOrientation = patient_orientation
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    return path, pixels


def test_a_volume_without_patient_geometry_is_shown_as_stored_without_letters(tmp_path):
    """Reorienting the assumed identity affine turned such frames by 180 degrees under made-up letters."""
    path, pixels = _no_geometry_dicom(tmp_path / "no_geometry.dcm", frames=3)
    with pytest.warns(UserWarning, match="no patient geometry"):
        scan = load_scan(path)
    assert scan.metadata["orientation_known"] is False and not V.has_geometry(scan)
    disp = V.for_display(scan)
    for k in range(3):  # row 0 at the top, column 0 at the left, as every DICOM viewer shows a frame
        assert np.array_equal(disp.array[:, :, k].T, pixels[k])
    sal = Scan(np.zeros(scan.shape, np.float32), scan.affine, format="dicom")  # a map has no metadata of its own
    assert V.for_display(sal, like=scan) is sal
    assert V.orientation_letters(disp, "axial") is None
    facts = dict(V.scan_facts(scan.summary()))
    assert facts["Orientation"] == "unknown (not in the file: shown as stored)"


def test_a_radiograph_without_geometry_takes_its_letters_from_patient_orientation(tmp_path):
    path, _ = _no_geometry_dicom(tmp_path / "xray.dcm", patient_orientation=["R", "F"])
    scan = load_scan(path)
    assert V.orientation_letters(V.for_display(scan), "axial") == {"top": "H", "bottom": "F", "left": "L",
                                                                    "right": "R"}


def test_a_plain_picture_says_its_pixel_size_and_orientation_are_unknown(tmp_path):
    from PIL import Image

    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) % 255).convert("L").save(tmp_path / "p.png")
    facts = dict(V.scan_facts(load_scan(tmp_path / "p.png").summary()))
    assert facts["Spacing"] == "unknown (a plain picture has no pixel size, 1 mm assumed)"
    assert facts["Orientation"] == "unknown (not in the file: shown as stored)"
