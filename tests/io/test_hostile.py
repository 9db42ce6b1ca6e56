"""Hostile, huge and subtly broken inputs (issue 18): bounded work, correct geometry or a clear refusal.

Every case of :mod:`tests.io.hostile` must end in medtl's own one-line error (or, for the
spacing cases, a scan that says its spacing is unknown) within seconds; a seeded fuzz run
over the real DICOM corpus must raise nothing but medtl's errors. Peak memory is measured,
not asserted, by ``benchmarks/bench_hostile.py``.
"""

from __future__ import annotations

import signal
import time
import warnings
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medtl.errors as errors
from medtl.errors import CorruptFileError, ScanError, SeriesError
from medtl.io import limits, load_scan
from medtl.io.archive import read_member
from medtl.io.dicom import read_dicom, read_series
from medtl.io.limits import LimitError
from tests.io.hostile import bomb_cases, fuzz_cases

SECONDS = 10.0  # each refusal must be this fast (they take milliseconds)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return {c.name: c for c in bomb_cases(tmp_path_factory.mktemp("hostile"), small=True)}


def _error_class(name: str) -> type[BaseException]:
    return LimitError if name == "LimitError" else getattr(errors, name)


REFUSED = ["dicom_frames_2147483647", "dicom_million_1x1_frames", "dicom_frames_4000_in_9kb", "dicom_rows_65535", "dicom_bits_allocated_7",
           "dicom_unknown_vr", "dicom_slope_0", "dicom_slope_1e39", "dicom_slope_nan", "nifti_gz_claims_1200_cubed",
           "nifti_gz_claims_renamed_bin", "nifti_truncated", "png_claims_100000_squared", "tiff_claims_60000_squared",
           "deflated_dicom_claims_16384_squared_small", "series_slice_without_position", "png_1_by_60m_in_69_bytes",
           "jpegls_frame_claims_65535_squared", "dicom_orientation_scaled"]


@pytest.mark.parametrize("name", REFUSED)
def test_hostile_file_is_refused_fast_in_one_line_naming_it(corpus, name):
    case = corpus[name]
    t0 = time.perf_counter()
    with pytest.raises(ScanError) as info:
        load_scan(case.path)
    assert time.perf_counter() - t0 < SECONDS
    assert isinstance(info.value, _error_class(case.expect)), (type(info.value), info.value)
    text = str(info.value)
    assert "\n" not in text and len(text) < 600
    assert str(case.path) in text


def test_frame_claim_names_the_claim_and_the_limit(corpus):
    with pytest.raises(LimitError, match=r"header claims 2,147,483,647 frame\(s\) of 64 x 64.*MEDTL_MAX_FRAMES"):
        read_dicom(corpus["dicom_frames_2147483647"].path)
    with pytest.raises(LimitError, match=r"1,000,000 frame\(s\) of 1 x 1: over the limit of 65,536 frames.*"
                                         r"raise MEDTL_MAX_FRAMES"):
        read_dicom(corpus["dicom_million_1x1_frames"].path)
    with limits.override(max_frames=2**31):  # the other budgets still hold
        with pytest.raises(LimitError, match="MEDTL_MAX_VOXELS"):
            read_dicom(corpus["dicom_frames_2147483647"].path)


def test_frame_claim_beyond_the_bytes_present_is_truncation(corpus):
    with pytest.raises(CorruptFileError, match=r"4000 frame\(s\) of 64 x 64 .* but the file holds"):
        read_dicom(corpus["dicom_frames_4000_in_9kb"].path)


def test_rescale_slope_zero_and_infinite_pixels_are_clear_errors(corpus):
    with pytest.raises(CorruptFileError, match="RescaleSlope is 0"):
        load_scan(corpus["dicom_slope_0"].path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" printed beside the one line
        with pytest.raises(CorruptFileError, match="not finite"):
            load_scan(corpus["dicom_slope_1e39"].path)


def test_unknown_vr_not_implemented_error_becomes_scan_error(corpus):
    with pytest.raises(CorruptFileError, match="NotImplementedError: Unknown Value Representation 'ZZ'"):
        load_scan(corpus["dicom_unknown_vr"].path)


@pytest.mark.parametrize("name,problem", [("dicom_spacing_missing", "no PixelSpacing"),
                                          ("dicom_spacing_zero", "invalid PixelSpacing"),
                                          ("dicom_spacing_negative", "invalid PixelSpacing")])
def test_missing_zero_negative_spacing_reported_unknown_never_mirrored(corpus, name, problem):
    ref = read_dicom(get_testdata_file("MR_small.dcm"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scan = load_scan(corpus[name].path)
    summary = scan.summary()
    assert summary["spacing_known"] is False and problem in summary["spacing_note"]
    assert scan.metadata["spacing_known"] is False
    assert scan.orientation == ref.orientation  # a negative spacing must not turn LPS into RAS
    np.testing.assert_array_equal(scan.array, ref.array)
    if problem == "invalid PixelSpacing":  # a broken value is warned about (a note in `score`)
        assert any(problem in str(w.message) for w in caught)
    assert ref.metadata["spacing_known"] is True and "spacing_known" not in ref.summary()


def test_series_with_one_slice_lacking_position_is_refused_not_mirrored(corpus):
    folder = corpus["series_slice_without_position"].path
    with pytest.raises(SeriesError, match="1 of 4 slices lack ImagePositionPatient"):
        read_series(folder)


def test_renamed_nifti_is_checked_by_content(corpus):
    with pytest.raises(LimitError, match="NIfTI header claims.*MEDTL_MAX_VOXELS"):
        load_scan(corpus["nifti_gz_claims_renamed_bin"].path)


def test_zip_member_over_the_byte_limit_is_refused_before_reading(corpus, monkeypatch):
    monkeypatch.setenv("MEDTL_MAX_BYTES", "4MiB")
    with pytest.raises(CorruptFileError, match="declares 8 MB.*MEDTL_MAX_BYTES"):
        read_series(corpus["zip_member_over_limit"].path)


def test_zip_member_is_streamed_with_a_running_cap(tmp_path):
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", bytes(3 << 20))
    with zipfile.ZipFile(path) as zf:
        assert len(read_member(zf, "a.dcm", "z.zip:a.dcm")) == 3 << 20
        with pytest.raises(LimitError, match="z.zip:a.dcm: zip member declares 3 MiB"):
            read_member(zf, "a.dcm", "z.zip:a.dcm", max_bytes=1 << 20)


def test_limits_come_from_the_environment_and_can_be_overridden(monkeypatch):
    ct = get_testdata_file("CT_small.dcm")
    monkeypatch.setenv("MEDTL_MAX_VOXELS", "1000")
    with pytest.raises(LimitError, match="16,384 values, over the limit of 1,000"):
        load_scan(ct)
    with limits.override(max_voxels=10**6):
        assert load_scan(ct).shape == (128, 128, 1)
    monkeypatch.setenv("MEDTL_MAX_VOXELS", "lots")
    with pytest.raises(ScanError, match="MEDTL_MAX_VOXELS: not a size"):
        load_scan(ct)
    monkeypatch.delenv("MEDTL_MAX_VOXELS")
    assert limits.parse_size("2GiB") == 2**31 and limits.parse_size("512M") == 512 * 10**6
    assert limits.current() == limits.Limits()


def test_decoder_panic_becomes_scan_error(monkeypatch):
    """pylibjpeg's rust decoders raise pyo3_runtime.PanicException, a BaseException."""

    class PanicException(BaseException):
        pass

    def panic(self):
        raise PanicException("called `Result::unwrap()` on an `Err` value")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(panic))
    with pytest.raises(CorruptFileError, match="cannot decode pixel data"):
        load_scan(get_testdata_file("MR_small.dcm"))


@pytest.mark.parametrize("exc", [NotImplementedError("unknown VR"), KeyError("x"), MemoryError(),
                                 RecursionError("deep")])
def test_any_third_party_exception_becomes_scan_error_naming_the_file(monkeypatch, exc):
    import medtl.io.dicom.sniff as sniff

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(sniff.pydicom, "dcmread", boom)
    path = get_testdata_file("MR_small.dcm")
    with pytest.raises(ScanError) as info:
        load_scan(path)
    assert path in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- seeded fuzzing

FUZZ_SOURCES = ["emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm", "emri_small_jpeg_ls_lossless.dcm",
                "emri_small_jpeg_2k_lossless.dcm", "JPEG-LL.dcm", "liver.dcm", "liver_rle.dcm", "liver_deflate.dcm",
                "eCT_Supplemental.dcm", "bad_sequence.dcm", "US1_UNCR.dcm"]
FUZZ_CASES = 120  # benchmarks/bench_hostile.py runs >= 1000 (in subprocesses, with a time budget)


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


@pytest.mark.shared
def test_seeded_fuzz_raises_only_medtl_errors(shared, tmp_path):
    sources = [shared(f"data/dicom/{name}") for name in FUZZ_SOURCES]
    outcomes: dict[str, int] = {}
    foreign: list[str] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i, src, desc, data in fuzz_cases(sources, FUZZ_CASES, seed=18):
            path = tmp_path / f"case{i:04d}.dcm"
            path.write_bytes(data)
            signal.alarm(20)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    load_scan(path)
                kind = "ok"
            except ScanError as exc:
                kind = type(exc).__name__
                assert "\n" not in str(exc)
            except _Hang:
                kind = "hang"
                foreign.append(f"{src} {desc}: hang")
            except BaseException as exc:  # noqa: BLE001 - exactly what the test looks for
                kind = type(exc).__name__
                foreign.append(f"{src} {desc}: {kind}: {exc}")
            finally:
                signal.alarm(0)
            outcomes[kind] = outcomes.get(kind, 0) + 1
            path.unlink()
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not foreign, foreign[:5]
    assert sum(outcomes.values()) == FUZZ_CASES
    assert outcomes.get("ok", 0) and len(outcomes) > 2  # the mutations hit both good and refused paths
