"""Study discovery: what a folder or manifest holds, keyed for resume, and what cannot be scored."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pydicom
import pytest

from medtl.errors import MedtlError
from medtl.infer import discover
from medtl.infer.studies import content_key, file_sha1
from medtl.io import load_scan

from .conftest import SAMPLE, make_batch_folder


def _uid(path, tag):
    return str(pydicom.dcmread(path, stop_before_pixels=True)[tag].value)


def test_3d_model_groups_dicom_by_series_across_folders(tmp_path):
    make_batch_folder(tmp_path)
    # a series whose slices are split over two folders is still one study
    split = tmp_path / "split"
    for i, f in enumerate(sorted((SAMPLE / "series" / "P0042").glob("*.dcm"))):
        (split / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, split / f"part{i % 2}" / f"x{f.name}")
    found = discover(tmp_path, spatial_dims=3)
    series = {s.key: s for s in found.studies if s.key.startswith("series:")}
    uid = {d: _uid(next((SAMPLE / "series" / d).glob("*.dcm")), "SeriesInstanceUID")
           for d in ("P0041", "P0042", "P0043", "P0044")}
    truncated_uid = _uid(SAMPLE / "ct2d" / "P0001_1.dcm", "SeriesInstanceUID")
    assert set(series) == {f"series:{u}" for u in uid.values()} | {f"series:{truncated_uid}"}
    p42 = series[f"series:{uid['P0042']}"]  # in mixed/ and split/: 64 files, one study
    assert len(p42.files) == 64 and not p42.exclusive
    assert series[f"series:{uid['P0041']}"].exclusive and series[f"series:{uid['P0041']}"].path == str(tmp_path / "P0041")
    assert not series[f"series:{uid['P0044']}"].exclusive  # shares mixed/ with P0042
    assert series[f"series:{truncated_uid}"].kind == "file"  # one-file series: read as a file
    nifti = [s for s in found.studies if s.path.endswith(".nii.gz")]
    assert [s.key for s in nifti] == [content_key(f"nii/{n}", file_sha1(tmp_path / "nii" / n))
                                      for n in ("P0031.nii.gz", "P0032.nii.gz")]
    reasons = {e.path: e.reason for e in found.errors}
    assert set(reasons) == {str(tmp_path / "notes.dcm"), str(tmp_path / "empty")}
    assert "not recognised" in reasons[str(tmp_path / "notes.dcm")]
    assert reasons[str(tmp_path / "empty")].startswith("empty folder")
    assert found.ignored == [str(tmp_path / "README.txt")]


def test_series_sharing_a_folder_reads_exactly_like_its_own_folder(tmp_path):
    make_batch_folder(tmp_path)
    found = discover(tmp_path, spatial_dims=3)
    uid = _uid(next((SAMPLE / "series" / "P0044").glob("*.dcm")), "SeriesInstanceUID")
    study = next(s for s in found.studies if s.key == f"series:{uid}")
    assert not study.exclusive
    got, ref = study.load(), load_scan(SAMPLE / "series" / "P0044")
    np.testing.assert_array_equal(got.array, ref.array)
    np.testing.assert_array_equal(got.affine, ref.affine)
    assert got.source == str(tmp_path / "mixed")


def test_2d_model_scores_each_dicom_file(tmp_path):
    for name in ("P0001_1.dcm", "P0001_2.dcm"):  # two slices of one patient share a SeriesInstanceUID
        shutil.copy(SAMPLE / "ct2d" / name, tmp_path / name)
    shutil.copy(SAMPLE / "ct2d" / "P0001_1.dcm", tmp_path / "copy_of_1.dcm")  # same instance twice
    shutil.copy(next((SAMPLE / "png").glob("*.png")), tmp_path / "xray.png")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "blank.dcm").write_bytes(b"")
    found = discover(tmp_path, spatial_dims=2)
    keys = {s.key for s in found.studies}
    uid1, uid2 = (_uid(tmp_path / n, "SOPInstanceUID") for n in ("P0001_1.dcm", "P0001_2.dcm"))
    # P0001_1 exists twice: its copies are keyed with their content too (identical here: one study)
    assert keys == {f"sop:{uid1}@sha1:{file_sha1(tmp_path / 'P0001_1.dcm')}", f"sop:{uid2}",
                    content_key("xray.png", file_sha1(tmp_path / "xray.png"))}
    # studies are taken in path order, so the later path of the duplicated instance is the one ignored
    assert sorted(found.ignored) == sorted([str(tmp_path / ".DS_Store"), str(tmp_path / "copy_of_1.dcm")])
    assert [(e.path, e.reason) for e in found.errors] == [(str(tmp_path / "blank.dcm"),
                                                           "file is empty (re-copy or re-export it)")]


def test_content_key_changes_with_content_and_place(tmp_path):
    a = tmp_path / "a.nii.gz"
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", a)
    k1 = discover(tmp_path, 3).studies[0].key
    assert discover(tmp_path, 3).studies[0].key == k1  # stable
    a.rename(tmp_path / "b.nii.gz")
    k2 = discover(tmp_path, 3).studies[0].key
    shutil.copy(SAMPLE / "ct3d" / "P0032.nii.gz", tmp_path / "b.nii.gz")
    k3 = discover(tmp_path, 3).studies[0].key
    assert len({k1, k2, k3}) == 3


def test_outputs_inside_the_input_are_not_studies(tmp_path):
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", tmp_path / "a.nii.gz")
    maps = tmp_path / "maps"
    maps.mkdir()
    shutil.copy(SAMPLE / "ct3d" / "P0032.nii.gz", maps / "a_map.nii.gz")
    found = discover(tmp_path, 3, exclude=[maps])
    assert [s.path for s in found.studies] == [str(tmp_path / "a.nii.gz")] and not found.errors


def test_manifest_rows_are_studies(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\n"
                                    f"{SAMPLE / 'ct3d' / 'P0031.nii.gz'},1\n"
                                    "missing.nii.gz,0\n"
                                    f"{SAMPLE / 'series' / 'P0041'},0\n"
                                    f"{SAMPLE / 'ct3d' / 'P0031.nii.gz'},1\n"
                                    ",0\n")
    found = discover(tmp_path / "m.csv", 3)
    assert [s.kind for s in found.studies] == ["file", "folder"]  # the repeated row is scored once
    assert [e.reason for e in found.errors] == ["no such file or folder", "empty 'path' cell"]
    (tmp_path / "bad.csv").write_text("file\nx.dcm\n")
    with pytest.raises(MedtlError, match="'path' column"):
        discover(tmp_path / "bad.csv", 3)
    with pytest.raises(MedtlError, match="no such file"):
        discover(tmp_path / "nope", 3)


def test_a_spreadsheet_manifest_scores_as_it_trains(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM and may pad names: training's reader took such a file,
    scoring refused it ("needs a 'path' column"); a Latin-1 file raised a bare UnicodeDecodeError."""
    nii = SAMPLE / "ct3d" / "P0031.nii.gz"
    (tmp_path / "bom.csv").write_bytes(f"\ufeffpath , label\r\n{nii},1\r\n".encode())
    assert [s.path for s in discover(tmp_path / "bom.csv", 3).studies] == [str(nii)]
    (tmp_path / "latin1.csv").write_bytes(f"path,label\n{nii},caf\xe9\n".encode("latin-1"))
    with pytest.raises(MedtlError, match=r"latin1.csv: not UTF-8 text \(save the manifest as CSV UTF-8\)$"):
        discover(tmp_path / "latin1.csv", 3)


def test_an_empty_input_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch):
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MedtlError, match=r"^the input path is empty \(give a folder of studies or a manifest CSV\)$"):
        discover("", 3)


def test_a_damaged_copy_of_an_instance_never_hides_the_good_one(tmp_path):
    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "z_good.dcm")
    shutil.copy(get_testdata_file("MR_truncated.dcm"), tmp_path / "a_truncated.dcm")  # same SOPInstanceUID
    found = discover(tmp_path, spatial_dims=2)
    assert sorted(s.path for s in found.studies) == [str(tmp_path / "a_truncated.dcm"), str(tmp_path / "z_good.dcm")]
    assert len({s.key for s in found.studies}) == 2 and not found.ignored


def test_series_sharing_a_folder_reports_gaps_with_the_real_folder(tmp_path):
    make_batch_folder(tmp_path)
    uid = _uid(next((SAMPLE / "series" / "P0044").glob("*.dcm")), "SeriesInstanceUID")
    ours = sorted((tmp_path / "mixed").glob("b_*.dcm"),
                  key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    ours[len(ours) // 2].unlink()  # a gap in the middle of the series
    study = next(s for s in discover(tmp_path, spatial_dims=3).studies if s.key == f"series:{uid}")
    assert not study.exclusive and all(f in study.files for f in map(str, ours[:3]))
    with pytest.warns(UserWarning, match=f"^{re.escape(str(tmp_path / 'mixed'))}: series {uid}: 1 missing slices"):
        scan = study.load()
    assert scan.shape[2] == len(ours) - 1 and scan.source == str(tmp_path / "mixed")


def test_a_named_pipe_in_the_input_is_an_error_row_never_opened(tmp_path):
    import os

    shutil.copy(SAMPLE / "ct2d" / "P0001_1.dcm", tmp_path / "a.dcm")
    os.mkfifo(tmp_path / "pipe.dcm")  # opening it would wait for a writer forever
    found = discover(tmp_path, 2)
    assert [s.path for s in found.studies] == [str(tmp_path / "a.dcm")]
    (error,) = found.errors
    assert error.path == str(tmp_path / "pipe.dcm") and error.reason.startswith("a named pipe (FIFO), not a file")


def test_a_manifest_row_naming_a_device_or_a_pipe_is_an_error_row_never_opened(tmp_path):
    """``medtl score`` hashed /dev/zero for the row's key, reading it forever (hundreds of GB in minutes)."""
    import os
    import signal

    os.mkfifo(tmp_path / "pipe.dcm")  # opening it would wait for a writer forever
    (tmp_path / "m.csv").write_text(f"path\n{SAMPLE / 'ct2d' / 'P0001_1.dcm'}\n/dev/zero\npipe.dcm\n")

    def hang(signum, frame):
        raise TimeoutError("discovery did not end within 20 s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)
    try:
        found = discover(tmp_path / "m.csv", 2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert [s.path for s in found.studies] == [str(SAMPLE / "ct2d" / "P0001_1.dcm")]
    assert [(e.path, e.reason.split(",")[0]) for e in found.errors] == [
        ("/dev/zero", "a character device"), (str(tmp_path / "pipe.dcm"), "a named pipe (FIFO)")]


def test_discovery_errors_say_what_to_do(tmp_path):
    (tmp_path / "notes.dcm").write_text("not a scan\n")
    (tmp_path / "empty").mkdir()
    nested = (b"\x09\x00\x10\x10SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff") * 5000
    whole = (SAMPLE / "ct2d" / "P0001_1.dcm").read_bytes()
    at = whole.find(b"\x10\x00\x10\x00")  # PatientName: undefined-length sequences nested 5000 deep before it
    (tmp_path / "cut.dcm").write_bytes(whole[:at] + nested)
    found = discover(tmp_path, spatial_dims=2)
    reasons = {e.path.rstrip("/"): e.reason for e in found.errors}
    assert reasons[str(tmp_path / "notes.dcm")].endswith("check the file, or move it out of the input folder)")
    assert reasons[str(tmp_path / "empty")].endswith("remove it or copy the study in)")
    assert reasons[str(tmp_path / "cut.dcm")].startswith("malformed DICOM header (")
    assert reasons[str(tmp_path / "cut.dcm")].endswith("; re-export the file")


def test_reading_the_headers_of_a_folder_shows_a_bar_only_when_asked(tmp_path, capsys):
    """5,000 DICOM files took about 10 s of header reading before `medtl score` printed anything."""
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(tmp_path / f"{i}.png")
    assert len(discover(tmp_path, 2).studies) == 3
    assert "reading headers" not in capsys.readouterr().err
    assert len(discover(tmp_path, 2, progress=True).studies) == 3
    assert re.search(r"reading headers: +\d+%.*/3", capsys.readouterr().err)
