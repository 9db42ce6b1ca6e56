"""Inputs that lie about themselves, found by fuzzing the readers: special files, codestreams and
image headers claiming more than the file holds, zip bombs, impossible geometry, damaged gzip
streams, pixel data the header does not describe. Each is refused in one line naming the file,
within seconds, before the claim is allocated."""

from __future__ import annotations

import gzip
import io
import os
import signal
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medtl.errors import CorruptFileError, ScanError, UnsupportedFormatError
from medtl.io import Scan, limits, load_scan
from medtl.io.detect import special_file

REPO = Path(__file__).resolve().parents[2]
CT = REPO / "sample_data" / "ct2d" / "P0001_1.dcm"  # explicit VR little endian, 128 x 128
CT_J2K = REPO / "sample_data" / "ct2d" / "P0002_1.dcm"  # JPEG 2000 lossless
VOLUME = REPO / "sample_data" / "ct3d" / "P0031.nii.gz"


@pytest.fixture(autouse=True)
def _seconds():
    """Each case must end within 20 s: a regression to a hang fails instead of stalling the run."""
    def hang(signum, frame):
        raise TimeoutError("no answer within 20 s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def refused(path: Path, kind: type[BaseException] = ScanError, match: str = "") -> str:
    with pytest.raises(kind, match=match) as info:
        load_scan(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path).replace("\n", "\\x0a"))
    return text


def test_named_pipes_and_devices_are_never_opened(tmp_path):
    fifo = tmp_path / "scan.dcm"
    os.mkfifo(fifo)
    (tmp_path / "zero.dcm").symlink_to("/dev/zero")
    assert special_file(fifo) == "a named pipe (FIFO)" and special_file(CT) is None
    refused(fifo, UnsupportedFormatError, "a named pipe")
    refused(tmp_path / "zero.dcm", UnsupportedFormatError, "a character device")


def _with_codestream_size(src: Path, out: Path, marker: bytes, offset: int, rows: int, cols: int) -> Path:
    data = bytearray(src.read_bytes())
    at = data.find(marker)
    assert at > 0
    if marker == b"\xff\x4f\xff\x51":  # J2K SIZ: Xsiz (columns) then Ysiz (rows)
        data[at + offset:at + offset + 8] = struct.pack(">II", cols, rows)
    else:  # JPEG SOF: height (rows) then width (columns)
        data[at + offset:at + offset + 4] = struct.pack(">HH", rows, cols)
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("src, marker, offset", [
    (CT_J2K, b"\xff\x4f\xff\x51", 8),  # JPEG 2000
    (Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")), b"\xff\xf7", 5),  # JPEG-LS
    (Path(get_testdata_file("SC_rgb_jpeg_gdcm.dcm")), b"\xff\xc3", 5),  # JPEG lossless
])
def test_a_codestream_claiming_more_than_the_header_is_refused_before_decoding(tmp_path, src, marker, offset):
    assert load_scan(src).shape[:2] == tuple(reversed(pydicom.dcmread(src).pixel_array.shape[:2]))
    forged = _with_codestream_size(src, tmp_path / "forged.dcm", marker, offset, 65535, 65535)
    refused(forged, CorruptFileError, "compressed stream claims 65535 x 65535 pixels but the header says")


def test_native_pixels_the_header_does_not_describe_are_refused(tmp_path):
    ds = pydicom.dcmread(CT)
    ds.Rows = 63  # 128 x 128 of data: 65 rows would be dropped
    ds.save_as(tmp_path / "rows.dcm")
    refused(tmp_path / "rows.dcm", CorruptFileError, "the header does not describe the pixels")
    ds = pydicom.dcmread(CT)
    ds.PixelData = ds.PixelData + b"\0\0"  # padding is not a lie
    ds.save_as(tmp_path / "padded.dcm")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert load_scan(tmp_path / "padded.dcm").shape == (128, 128, 1)
    assert not [w for w in seen if "a row or more" in str(w.message)]
    ds = pydicom.dcmread(CT)
    ds.Rows = 127  # one row less than the data: read, but the row it drops is warned about
    ds.save_as(tmp_path / "row.dcm")
    with pytest.warns(UserWarning, match=r"row\.dcm: the pixel data holds 256 B more than 1 frame\(s\) of 127 x 128 "
                                         r"take \(a row or more\): .* check Rows and Columns"):
        assert load_scan(tmp_path / "row.dcm").shape == (128, 127, 1)


def test_png_and_jpeg_headers_claiming_more_than_the_file_can_hold_are_refused(tmp_path):
    from PIL import Image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = tmp_path / "tall.png"  # 69 bytes claiming 1 x 60,000,000 pixels: PIL fills the rest with zeros
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 60_000_000, 8, 0, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    refused(png, CorruptFileError, r"claims 1 x 60000000 pixels .* but the file holds 69 B")
    buf = io.BytesIO()
    Image.fromarray(np.arange(128 * 128, dtype=np.uint8).reshape(128, 128)).save(buf, "JPEG")
    jpeg = _with_codestream_size_bytes(buf.getvalue(), 8000, 8000)
    (tmp_path / "big.jpg").write_bytes(jpeg)
    refused(tmp_path / "big.jpg", CorruptFileError, "more than PNG or JPEG can compress")
    black = tmp_path / "black.png"  # the best deflate can do (about 1030:1) still loads
    Image.fromarray(np.zeros((2048, 2048), np.uint8)).save(black)
    assert load_scan(black).shape == (2048, 2048, 1)


def _with_codestream_size_bytes(data: bytes, rows: int, cols: int) -> bytes:
    out = bytearray(data)
    at = out.find(b"\xff\xc0")
    out[at + 5:at + 9] = struct.pack(">HH", rows, cols)
    return bytes(out)


def test_a_zip_bomb_beside_a_series_is_refused_from_its_listing(tmp_path):
    bomb = tmp_path / "series.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(CT, "a/1.dcm")
        zf.writestr("a/padding.bin", b"\0" * (80 * 2**20))
    assert bomb.stat().st_size < 2**20
    refused(bomb, CorruptFileError, "looks like a zip bomb")
    small = tmp_path / "small.zip"  # far better than 100:1 too, but too small to harm: read
    with zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(CT, "a/1.dcm")
        zf.writestr("a/padding.bin", b"\0" * 2**20)
    assert load_scan(small).shape == (128, 128, 1)


def _with_orientation(tmp_path: Path, iop: list[float]) -> Path:
    ds = pydicom.dcmread(CT)
    ds.ImageOrientationPatient = iop
    ds.save_as(tmp_path / "iop.dcm")
    return tmp_path / "iop.dcm"


@pytest.mark.parametrize("iop", [[2, 0, 0, 0, 2, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0], [1, 0, 0, 0.5, 0.5, 0]])
def test_orientation_that_is_not_two_orthonormal_vectors_is_refused(tmp_path, iop):
    refused(_with_orientation(tmp_path, iop), CorruptFileError, "invalid ImageOrientationPatient")


def test_orientation_rounded_by_the_scanner_is_renormalised_not_scaling_the_voxels(tmp_path):
    spacing = load_scan(CT).spacing
    scan = load_scan(_with_orientation(tmp_path, [1.004, 0, 0, 0, 0.997, 0]))
    np.testing.assert_allclose(scan.spacing, spacing, rtol=1e-12)


def test_an_absurd_pixel_spacing_or_slice_thickness_counts_as_unknown(tmp_path):
    ds = pydicom.dcmread(CT)
    ds.PixelSpacing = [1e308, 1e308]
    ds.save_as(tmp_path / "far.dcm")
    with pytest.warns(UserWarning, match="invalid PixelSpacing"):
        scan = load_scan(tmp_path / "far.dcm")
    assert np.all(np.isfinite(scan.affine))
    ds = pydicom.dcmread(CT)
    ds.SliceThickness = 1e308
    ds.save_as(tmp_path / "thick.dcm")
    assert np.all(np.isfinite(load_scan(tmp_path / "thick.dcm").affine))


def test_nifti_with_a_singular_affine_is_refused_and_no_scan_takes_one(tmp_path):
    img = nib.load(VOLUME)
    bad = nib.Nifti1Image(np.asanyarray(img.dataobj), None, img.header.copy())
    bad.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=2)  # rank 2: no slice axis
    bad.set_qform(None, code=0)
    nib.save(bad, tmp_path / "flat.nii.gz")
    refused(tmp_path / "flat.nii.gz", CorruptFileError, "singular or not finite")
    with pytest.raises(ValueError, match="three independent axes"):
        Scan(np.zeros((2, 2, 2)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="finite"):
        Scan(np.zeros((2, 2, 2)), np.diag([1.0, np.nan, 1.0, 1.0]))


def test_a_nifti_gz_whose_stream_fails_its_crc_is_refused(tmp_path):
    good = VOLUME.read_bytes()
    member = gzip.decompress(good)
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = raw.compress(member) + raw.flush()
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", zlib.crc32(member) ^ 0x1, len(member))  # the voxels intact, the CRC not
    (tmp_path / "crc.nii.gz").write_bytes(head + body + trailer)
    refused(tmp_path / "crc.nii.gz", CorruptFileError, "CRC check failed")
    (tmp_path / "same.nii.gz").write_bytes(head + body + struct.pack("<II", zlib.crc32(member), len(member)))
    np.testing.assert_array_equal(load_scan(tmp_path / "same.nii.gz").array, load_scan(VOLUME).array)


def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path):
    path = tmp_path / "bad\nname.dcm"
    path.write_bytes(b"\0" * 200)
    text = refused(path, UnsupportedFormatError)
    assert "bad\\x0aname.dcm" in text


def test_a_large_file_that_is_not_dicom_does_not_stop_its_folders_series(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    ds = pydicom.dcmread(CT)
    ds.save_as(folder / "1.dcm")
    (folder / "movie.mp4").write_bytes(b"\0\0\0\x20ftypisom" + b"\0" * (3 * 2**20))
    with limits.override(max_bytes=2 * 2**20):  # the movie is over the byte limit, the slice is not
        assert load_scan(folder).shape == (128, 128, 1)


def test_an_unreadable_file_or_folder_says_permission_denied(tmp_path):
    import shutil
    import subprocess
    import sys

    shutil.copy(CT, tmp_path / "locked.dcm")
    (tmp_path / "locked").mkdir()
    os.chmod(tmp_path / "locked.dcm", 0)
    os.chmod(tmp_path / "locked", 0)
    code = ("import sys\nfrom medtl.io import load_scan\nfor p in sys.argv[1:]:\n    try: load_scan(p)\n"
            "    except Exception as e: print(e)\n")
    cmd = [sys.executable, "-c", code, str(tmp_path / "locked.dcm"), str(tmp_path / "locked")]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv")
        cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    if proc.stderr.startswith("setpriv:"):
        pytest.skip(f"capabilities cannot be dropped here ({proc.stderr.strip()})")
    out = proc.stdout.splitlines()
    assert out == [f"{tmp_path / 'locked.dcm'}: permission denied (make it readable for this user (chmod / chown))",
                   f"{tmp_path / 'locked'}: permission denied (make it readable for this user (chmod / chown))"]


def test_a_compressed_frame_cut_before_its_end_marker_is_warned_about(tmp_path):
    from pydicom.encaps import encapsulate, generate_frames

    src = Path(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole file: no warning
        load_scan(src)
    ds = pydicom.dcmread(src)
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    ds.PixelData = encapsulate([frame[: len(frame) * 3 // 4]])  # lengths consistent, the last quarter gone
    ds.save_as(tmp_path / "cut.dcm")
    with pytest.warns(UserWarning, match=r"cut\.dcm: 1 of 1 compressed frame\(s\) end without their end-of-image"):
        try:
            load_scan(tmp_path / "cut.dcm")
        except CorruptFileError:
            pass  # or the decoder itself notices


def test_nan_or_infinite_voxels_are_refused_in_nifti_and_float_tiff_as_in_dicom(tmp_path):
    import tifffile

    img = nib.load(VOLUME)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    data[:2, :2, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "nan.nii.gz")
    refused(tmp_path / "nan.nii.gz", CorruptFileError, r"4 of \d+ voxel values are not finite")
    flat = np.ones((32, 32), np.float32)
    flat[0, 0] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", flat)
    refused(tmp_path / "inf.tif", CorruptFileError, "1 of 1024 pixel values are not finite")


@pytest.mark.parametrize("src", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_compressed_pixel_data_with_fewer_frames_than_the_header_claims_is_refused(tmp_path, src):
    """The decoder stopped at the missing frame with a bare 'cannot decode pixel data (StopIteration)'."""
    ds = pydicom.dcmread(get_testdata_file(src))
    ds.NumberOfFrames = 2
    ds.save_as(tmp_path / "two.dcm")
    refused(tmp_path / "two.dcm", CorruptFileError, match="header claims 2 frames but the pixel data holds 1")


def test_a_file_marked_dicom_holding_no_data_element_is_damaged_not_a_non_image(tmp_path):
    """A file cut right after its file meta read as 'DICOM object without pixel data holds no image to
    classify (load the referenced image series instead)'; in a series folder it was skipped without a word,
    leaving only 'missing slices'."""
    whole = CT.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(whole[140:144], "little")  # (0002,0000) group length
    (tmp_path / "cut.dcm").write_bytes(whole[:meta_end])
    refused(tmp_path / "cut.dcm", CorruptFileError, match="no data element could be read after the file meta")
    series = tmp_path / "series"
    series.mkdir()
    for k in range(3):
        ds = pydicom.dcmread(CT)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [0, 0, 5.0 * k]
        ds.save_as(series / f"s{k}.dcm")
    (series / "s3.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 500)
    with pytest.warns(UserWarning, match=r"skipped 1 DICOM file\(s\) with a malformed header, e\.g\. .*s3\.dcm"):
        assert load_scan(series).shape == (128, 128, 3)
