"""The one zip-member check (medtl.io.archive): what it refuses, always or under limits."""

from __future__ import annotations

import stat
import zipfile

import pytest

from medtl.errors import CorruptFileError, SeriesError
from medtl.io.archive import check_zip, member_escapes


def _zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("name, escapes", [
    ("a/b.dcm", False), ("a/./b.dcm", False), ("a..b.dcm", False), ("../b.dcm", True), ("a/../../b.dcm", True),
    ("/etc/b.dcm", True), ("C:/b.dcm", True), ("C:\\b.dcm", True), ("a\\..\\..\\b.dcm", True),
])
def test_member_escapes(name, escapes):
    assert member_escapes(name) is escapes


def test_listing_has_files_only_and_declared_sizes(tmp_path):
    z = _zip(tmp_path / "ok.zip", {"d/": b"", "d/a.dcm": b"a" * 100, "b.dcm": b"b" * 50})
    listing = check_zip(z)
    assert sorted(i.filename for i in listing.members) == ["b.dcm", "d/a.dcm"]
    assert listing.total_bytes == 150 and 0 < listing.packed_bytes < 150


def test_structural_refusals_always_apply_and_name_the_archive(tmp_path):
    with pytest.raises(CorruptFileError, match=r"slip.zip: zip member '\.\./x.dcm' escapes"):
        check_zip(_zip(tmp_path / "slip.zip", {"ok.dcm": b"x", "../x.dcm": b"y"}))
    info = zipfile.ZipInfo("link.dcm")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(SeriesError, match="^shown.zip: zip member 'link.dcm' is a symbolic link"):
        check_zip(_zip(tmp_path / "l.zip", {info: "/etc/passwd"}), where="shown.zip", error=SeriesError)
    (tmp_path / "junk.zip").write_bytes(b"PK\x05\x06 not really")
    with pytest.raises(CorruptFileError, match="unreadable zip archive"):
        check_zip(tmp_path / "junk.zip")


def test_limits_apply_only_when_given(tmp_path):
    z = _zip(tmp_path / "bomb.zip", {f"{n}.dcm": bytes(2**20) for n in range(3)})  # zeros: ~1000x
    assert check_zip(z).total_bytes == 3 * 2**20
    with pytest.raises(CorruptFileError, match="3 files in the archive"):
        check_zip(z, max_files=2)
    with pytest.raises(CorruptFileError, match="once decompressed"):
        check_zip(z, max_total_bytes=2**20)
    with pytest.raises(CorruptFileError, match="zip bomb"):
        check_zip(z, max_ratio=100)


def test_encrypted_members_and_names_given_twice_are_refused_saying_so(tmp_path):
    """Both once read as 'no DICOM files found (1 files with a malformed DICOM header)', or as the
    header of one copy checked against the size of the other."""
    from medtl.io import load_scan

    raw = bytearray(_zip(tmp_path / "plain.zip", {"a.dcm": b"x" * 200}).read_bytes())
    raw[6] |= 1  # the encryption flag, in the local header and in the central directory
    raw[raw.rfind(b"PK\x01\x02") + 8] |= 1
    (tmp_path / "locked.zip").write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"locked.zip: zip member 'a.dcm' is encrypted.*without a password"):
        load_scan(tmp_path / "locked.zip")
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = _zip(tmp_path / "twice.zip", {"a.dcm": b"x", zipfile.ZipInfo("a.dcm"): b"y"})
    with pytest.raises(CorruptFileError, match=r"twice.zip: zip member 'a.dcm' appears twice"):
        load_scan(twice)


def test_a_zip_cut_before_its_central_directory_is_refused_as_a_damaged_zip(tmp_path):
    """It was 'not a DICOM, NIfTI, PNG, JPEG or TIFF file (content not recognised)'."""
    from medtl.io import detect_format, load_scan

    whole = _zip(tmp_path / "whole.zip", {"a.dcm": b"x" * 2000}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(whole[: len(whole) // 2])
    assert detect_format(tmp_path / "cut.zip") == "zip"
    with pytest.raises(CorruptFileError, match=r"cut.zip: unreadable zip archive .*re-create the archive"):
        load_scan(tmp_path / "cut.zip")
