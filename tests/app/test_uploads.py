"""Upload checks: unsafe archives and absurd uploads are refused before any decoding."""

import io
import os
import stat
import zipfile

import nibabel as nib
import numpy as np
import pytest

from medtl.app.uploads import UnsafeUploadError, check_archive, check_nifti, stage_upload
from medtl.io import load_scan
from medtl.demo.cohort import sample_path


def make_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():  # name: str or ZipInfo
            zf.writestr(name, data)
    return path


def series_files():
    return sorted(p for p in sample_path("series").iterdir() if p.is_file())


def test_series_zip_passes_and_reports_its_size(tmp_path):
    files = series_files()
    z = make_zip(tmp_path / "s.zip", {f"study/{f.name}": f.read_bytes() for f in files})
    assert check_archive(z) == sum(f.stat().st_size for f in files)
    assert stage_upload([z], tmp_path / "stage") == z  # loaded in place by medtl.io
    assert load_scan(z).shape == (64, 64, 32)


@pytest.mark.parametrize("member", ["../evil.dcm", "a/../../evil.dcm", "/etc/evil.dcm", "C:/evil.dcm"])
def test_members_escaping_the_archive_are_refused(tmp_path, member):
    z = make_zip(tmp_path / "slip.zip", {"ok.dcm": b"x", member: b"y"})
    with pytest.raises(UnsafeUploadError, match="escapes the archive"):
        check_archive(z)


def test_symbolic_link_members_are_refused(tmp_path):
    info = zipfile.ZipInfo("link.dcm")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = make_zip(tmp_path / "link.zip", {info: "/etc/passwd"})
    with pytest.raises(UnsafeUploadError, match="symbolic link"):
        check_archive(z)


def test_zip_bomb_is_refused_by_ratio_and_by_total(tmp_path):
    z = make_zip(tmp_path / "bomb.zip", {"zeros.dcm": bytes(20 * 2**20)})  # 20 MB of zeros: ~1000x
    assert os.path.getsize(z) < 200_000
    with pytest.raises(UnsafeUploadError, match="zip bomb"):
        check_archive(z)
    with pytest.raises(UnsafeUploadError, match="once decompressed"):
        check_archive(z, max_total_bytes=10 * 2**20, max_ratio=1e9)


def test_too_many_members_are_refused(tmp_path):
    z = make_zip(tmp_path / "many.zip", {f"{n}.dcm": os.urandom(64) for n in range(5)})
    assert check_archive(z, max_files=5) == 5 * 64
    with pytest.raises(UnsafeUploadError, match="5 files"):
        check_archive(z, max_files=4)


def test_broken_zip_is_refused_with_its_name(tmp_path):
    data = make_zip(tmp_path / "good.zip", {"a.dcm": os.urandom(5000)}).read_bytes()
    z = tmp_path / "cut.zip"
    z.write_bytes(data[:3000] + data[-71:])  # middle cut out: the central directory points nowhere
    with pytest.raises(UnsafeUploadError, match="cut.zip: unreadable zip archive"):
        stage_upload([z], tmp_path / "stage")


def test_nifti_declaring_a_huge_volume_is_refused_from_its_header(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.int16)
    buf = io.BytesIO()
    header.write_to(buf)
    path = tmp_path / "huge.nii"
    path.write_bytes(buf.getvalue() + bytes(int(header["vox_offset"]) - len(buf.getvalue()) + 16))
    with pytest.raises(UnsafeUploadError, match="huge.nii: declares 15259 MB"):
        stage_upload([path], tmp_path / "stage")
    check_nifti(sample_path("ct3d"))  # a real volume passes


def test_several_files_are_staged_into_a_folder_and_load_as_a_series(tmp_path):
    files = series_files()
    folder = stage_upload(files, tmp_path / "stage")
    assert folder.is_dir() and sorted(p.name[6:] for p in folder.iterdir()) == sorted(f.name for f in files)
    assert load_scan(folder).shape == (64, 64, 32)
    # the same name twice (two folders) stays two files
    twice = stage_upload([files[0], files[0]], tmp_path / "stage2")
    assert len(list(twice.iterdir())) == 2


def test_single_file_is_loaded_where_it_is(tmp_path):
    f = sample_path("ct2d")
    assert stage_upload([f], tmp_path / "stage") == f and not (tmp_path / "stage").exists()


def test_mixed_and_empty_uploads_are_refused(tmp_path):
    z = make_zip(tmp_path / "s.zip", {"a.dcm": b"x"})
    with pytest.raises(UnsafeUploadError, match="a .zip came with other files"):
        stage_upload([z, sample_path("ct2d")], tmp_path / "stage")
    with pytest.raises(UnsafeUploadError, match="no file uploaded"):
        stage_upload([], tmp_path / "stage")
    files = series_files()[:3]
    with pytest.raises(UnsafeUploadError, match="3 files uploaded"):
        stage_upload(files, tmp_path / "stage", max_files=2)
    with pytest.raises(UnsafeUploadError, match="MB uploaded"):
        stage_upload(files, tmp_path / "stage", max_total_bytes=10)
