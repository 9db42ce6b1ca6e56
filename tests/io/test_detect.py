import shutil

import numpy as np
import pytest
from skimage import io as skio

from medtl.errors import ScanError, UnsupportedFormatError
from medtl.io import Scan, detect_format, load_scan, save_nifti

from ..conftest import REPO


def test_dispatch_on_content_not_extension(tmp_path):
    nii = save_nifti(Scan(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    disguised = tmp_path / "volume.png"
    shutil.copy(nii, disguised)
    assert detect_format(disguised) == "nifti"
    assert load_scan(disguised).shape == (4, 4, 4)
    skio.imsave(tmp_path / "p.png", np.zeros((5, 5), np.uint8), check_contrast=False)
    shutil.copy(tmp_path / "p.png", tmp_path / "image.dcm")
    assert detect_format(tmp_path / "image.dcm") == "image"


def test_text_file_renamed_dcm_gives_one_line_error(tmp_path):
    bad = tmp_path / "notes.dcm"
    bad.write_text("this is not a scan\n" * 10)
    with pytest.raises(UnsupportedFormatError) as err:
        load_scan(bad)
    msg = str(err.value)
    assert "notes.dcm" in msg and "\n" not in msg


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.nii").write_bytes(b"")
    with pytest.raises(UnsupportedFormatError, match="empty"):
        load_scan(tmp_path / "empty.nii")
    with pytest.raises(ScanError, match="no such file"):
        load_scan(tmp_path / "missing.nii")


def test_scan_refuses_patient_identifiers():
    with pytest.raises(ValueError, match="PatientName"):
        Scan(np.zeros((2, 2)), np.eye(4), metadata={"PatientName": "Doe^John"})


@pytest.mark.parametrize("given, message", [
    ("", r"^the scan path is empty \(give the path of a scan file or folder\)$"),
    (None, r"^a scan is given by its path, got NoneType \(pass the file or folder as a str or pathlib.Path\)$"),
])
def test_an_empty_or_missing_path_is_named_as_such(given, message, tmp_path, monkeypatch):
    """``""`` read the current folder as a DICOM series; None was "unreadable ... the file is damaged"."""
    shutil.copytree(REPO / "sample_data" / "series", tmp_path / "series")  # a series in the current folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScanError, match=message):
        load_scan(given)
