import json
import subprocess
import sys

import nibabel as nib
import numpy as np

from medtl.cli import main
from medtl.io import Scan, save_nifti


def test_info_json_reports_geometry(tmp_path, capsys):
    aff = np.diag([-0.8, -0.8, 2.0, 1.0])  # LPS-like axes in RAS space
    save_nifti(Scan(np.zeros((6, 5, 4), np.int16), aff, modality="CT"), tmp_path / "x.nii.gz")
    assert main(["info", str(tmp_path / "x.nii.gz"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [6, 5, 4] and info["orientation"] == "LPS"
    assert info["spacing"] == [0.8, 0.8, 2.0] and info["modality"] == "CT"


def test_convert_writes_nifti_with_same_affine(tmp_path):
    aff = np.array([[0, 0.5, 0, 3], [-0.9, 0, 0, 4], [0, 0, 3, 5], [0, 0, 0, 1.0]])
    src = save_nifti(Scan(np.arange(24, dtype=np.float32).reshape(2, 3, 4), aff), tmp_path / "a.nii")
    assert main(["convert", str(src), str(tmp_path / "b.nii.gz")]) == 0
    img = nib.load(str(tmp_path / "b.nii.gz"))
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)


def test_cli_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "junk.dcm"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "medtl.cli", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "junk.dcm" in lines[0]


def test_weights_list_and_offline_fetch_error(capsys):
    assert main(["weights", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"resnet18", "resnet50", "densenet121", "efficientnet_lite0"}
    assert main(["weights", "fetch", "resnet18"]) == 2  # MEDTL_OFFLINE=1 in tests
    err = capsys.readouterr().err.strip()
    assert "resnet18-f37072fd.pth" in err and "medtl weights import" in err and "\n" not in err


def test_weights_import_refuses_a_modified_file(tmp_path, capsys):
    fake = tmp_path / "resnet18-f37072fd.pth"
    fake.write_bytes(b"not the published checkpoint")
    assert main(["weights", "import", str(fake)]) == 2
    err = capsys.readouterr().err
    assert "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec" in err
