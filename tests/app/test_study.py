"""What one upload reads (medtl.app.study): one study at a time, and the header as a clinician reads it."""

import zipfile

import pydicom
import pytest

from medtl.app.study import read_upload, study_header
from medtl.app.uploads import stage_upload
from medtl.demo.cohort import sample_path
from medtl.errors import ScanError


def test_files_of_several_studies_in_one_upload_are_refused_not_picked_from(tmp_path):
    """Scans dropped one after another add up in the upload box; the page must not show one of them."""
    ct2d = sample_path("ct2d").parent
    a, b = ct2d / "P0001_1.dcm", ct2d / "P0002_1.dcm"
    assert pydicom.dcmread(a).StudyInstanceUID != pydicom.dcmread(b).StudyInstanceUID
    with pytest.raises(ScanError, match=r"images of 2 different studies \(2 files\).*upload the files of one study"):
        read_upload(stage_upload([a, b], tmp_path / "two"), None)
    found, scan, header, _ = read_upload(stage_upload([a, ct2d / "P0001_2.dcm"], tmp_path / "one"), None)
    assert {d["study_uid"] for d in found} == {str(pydicom.dcmread(a).StudyInstanceUID)}
    # one .zip is one deliberate export: its series (of any study) go to the picker
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as zf:
        zf.write(a, "a.dcm")
        zf.write(b, "b.dcm")
    found, _, _, _ = read_upload(tmp_path / "two.zip", None)
    assert len({d["study_uid"] for d in found}) == 2


def test_a_multi_valued_patient_id_reads_as_its_values_not_a_python_list(tmp_path):
    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.PatientID = ["MRN", "483920"]
    ds.save_as(tmp_path / "two_ids.dcm")
    assert study_header(tmp_path / "two_ids.dcm")["Patient ID"] == "MRN, 483920"


def test_the_readers_notes_go_to_the_page_not_the_server_log(tmp_path, capfd, caplog):
    """A warning named the uploaded file on the server's stderr (file names often carry a patient's name)."""
    import numpy as np
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    ds.NumberOfFrames = 2
    ds.PixelData = np.zeros((2, 64, 64), np.int16).tobytes()
    upload = tmp_path / "gradio" / "3f9a" / "DOE_JOHN_MRN483920.dcm"
    upload.parent.mkdir(parents=True)
    ds.save_as(upload)
    _, scan, _, notes = read_upload(upload, None)
    assert scan.shape[2] == 2 and any("no patient geometry" in n for n in notes)
    assert all(n.startswith("DOE_JOHN_MRN483920.dcm: ") for n in notes)  # the name the user gave, no folders
    out, err = capfd.readouterr()
    assert "DOE_JOHN" not in out + err + caplog.text


def test_a_damaged_member_beside_the_series_does_not_fail_the_upload(tmp_path):
    """The reader skips a member failing its CRC; the study header then read it and the upload failed with
    a bare 'BadZipFile: Bad CRC-32 for file ...'."""
    import io

    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a_readme.txt", b"read me " * 40)
        zf.write(sample_path("ct2d"), "b.dcm")
    raw = bytearray(b.getvalue())
    raw[raw.find(b"read me")] ^= 0xFF  # the stored readme no longer matches its CRC
    (tmp_path / "export.zip").write_bytes(bytes(raw))
    _, scan, header, notes = read_upload(tmp_path / "export.zip", None)
    assert scan.shape == (128, 128, 1)
    assert header["Patient ID"] == str(pydicom.dcmread(sample_path("ct2d")).PatientID)
    assert any("a_readme.txt" in n for n in notes)
