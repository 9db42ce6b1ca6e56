"""Single DICOM files: decoding across transfer syntaxes, values, geometry, errors.

Files from pydicom's wheel and synthesized files always run; the real corpus in
../shared/data/dicom adds the enhanced, JPEG 2000, colour and SEG cases.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from medtl.errors import CorruptFileError, NotAnImageError, ScanError, UnsupportedFormatError
from medtl.io.dicom import is_dicom_file, read_dicom
from tests.io.test_series import LPS_TO_RAS, rotation, write_slice

DICOM = "data/dicom/"


def raw_pixels(path) -> np.ndarray:
    """pydicom's own decoding, no medtl processing."""
    return pydicom.dcmread(path).pixel_array


# ----------------------------------------------------------------------------- pydicom's wheel files

def test_ct_small_is_hounsfield_with_patient_geometry():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    scan = read_dicom(path)
    assert scan.format == "dicom" and scan.modality == "CT" and scan.shape == (128, 128, 1)
    assert scan.array.dtype == np.float32
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(scan.array[:, :, 0], expected.T)
    np.testing.assert_allclose(scan.affine[:3, 3], LPS_TO_RAS @ np.asarray(ds.ImagePositionPatient, float),
                               atol=1e-3)
    row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    ps = np.asarray(ds.PixelSpacing, float)
    np.testing.assert_allclose(scan.affine[:3, 0], LPS_TO_RAS @ row * ps[1])
    np.testing.assert_allclose(scan.affine[:3, 1], LPS_TO_RAS @ col * ps[0])
    meta = scan.metadata
    assert meta["rescale_intercept"] == float(ds.RescaleIntercept) and meta["rescale_slope"] == 1.0
    assert meta["series_uid"] == ds.SeriesInstanceUID and meta["transfer_syntax"] == "Explicit VR Little Endian"
    assert meta["sop_class_uid"] == ds.SOPClassUID and meta["bits_stored"] == 16
    assert str(ds.PatientName) not in repr(meta) and str(ds.PatientID) not in repr(meta)


def test_ct_small_agrees_with_monai_in_plane():
    """MONAI's PydicomReader is an independent implementation of the same convention
    (for one slice it leaves the k column at (0,0,1), so only i, j and origin compare)."""
    from monai.transforms import LoadImage

    path = get_testdata_file("CT_small.dcm")
    img = LoadImage(reader="PydicomReader", image_only=True)(path)
    scan = read_dicom(path)
    np.testing.assert_array_equal(np.asarray(img), scan.array[:, :, 0])
    np.testing.assert_allclose(np.asarray(img.affine)[:, [0, 1, 3]], scan.affine[:, [0, 1, 3]], atol=1e-5)


@pytest.mark.parametrize("name", [
    "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
    "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm",
])
def test_mr_small_encodings_decode_identically(name):
    ref = read_dicom(get_testdata_file("MR_small.dcm"))
    scan = read_dicom(get_testdata_file(name))
    assert scan.array.dtype == ref.array.dtype == np.int16  # signed, no rescale: integers kept
    assert scan.array.dtype.isnative
    np.testing.assert_array_equal(scan.array, ref.array)
    np.testing.assert_array_equal(scan.affine, ref.affine)
    np.testing.assert_array_equal(ref.array[:, :, 0], raw_pixels(get_testdata_file("MR_small.dcm")).T)


def test_truncated_pixel_data_is_corrupt():
    with pytest.raises(CorruptFileError, match="MR_truncated.dcm: cannot decode pixel data"):
        read_dicom(get_testdata_file("MR_truncated.dcm"))


@pytest.mark.parametrize("name, what", [
    ("rtstruct.dcm", "RT Structure Set"), ("rtplan.dcm", "RT Plan"), ("reportsi.dcm", "SR"),
    ("rtdose.dcm", "RT Dose"), ("liver_1frame.dcm", "Segmentation"), ("DICOMDIR", "DICOMDIR"),
    ("ExplVR_LitEndNoMeta.dcm", "RT Ion Plan"),  # preamble-less file
])
def test_non_image_objects(name, what):
    path = get_testdata_file(name)
    assert is_dicom_file(path)
    with pytest.raises(NotAnImageError, match=what) as info:
        read_dicom(path)
    assert "\n" not in str(info.value)


def test_colour_files():
    rle = read_dicom(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    raw = raw_pixels(get_testdata_file("SC_rgb_rle_2frame.dcm"))  # (frames, rows, cols, 3)
    assert rle.array.shape == (100, 100, 2, 3)
    np.testing.assert_array_equal(rle.array, raw.transpose(2, 1, 0, 3))
    palette_file = get_testdata_file("examples_palette.dcm")
    if palette_file is None:  # pydicom 3.0.0 downloads this file rather than ship it: offline it is None
        pytest.skip("pydicom ships examples_palette.dcm from 3.0.1 on (3.0.0 downloads it)")
    palette = read_dicom(palette_file)
    assert palette.photometric == "RGB" and palette.array.shape[-1] == 3 and palette.is_color


def test_uncompressed_ybr_full_422_holds_two_values_per_pixel_and_decodes():
    """Native YBR_FULL_422 stores 2 values per pixel, not 3: its 20000 bytes are the whole 100 x 100 image."""
    path = get_testdata_file("SC_ybr_full_422_uncompressed.dcm")
    scan = read_dicom(path)
    assert scan.photometric == "RGB" and scan.shape == (100, 100, 1)
    np.testing.assert_array_equal(scan.array[:, :, 0], raw_pixels(path).transpose(1, 0, 2))


def test_stray_byte_no_meta_file_is_not_dicom():
    """pydicom's no_meta.dcm starts with a stray 0x20 byte: even dcmread(force=True)
    finds no DICOM element in it, so it is reported as not DICOM, not crashed on."""
    path = get_testdata_file("no_meta.dcm")
    assert not is_dicom_file(path)
    with pytest.raises(UnsupportedFormatError):
        read_dicom(path)


# ----------------------------------------------------------------------------- synthesized files

def test_preamble_less_implicit_file_decodes(tmp_path):
    src = tmp_path / "part10.dcm"
    write_slice(src, np.arange(12 * 16, dtype=np.int16).reshape(12, 16), ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0),
                series_uid=generate_uid(), study_uid=generate_uid(), instance=1)
    ds = pydicom.dcmread(src)
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    raw = tmp_path / "raw.dcm"
    pydicom.dcmwrite(raw, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    head = raw.read_bytes()[:132]
    assert head[:2] == b"\x08\x00" and head[128:132] != b"DICM"  # really no preamble / meta
    assert is_dicom_file(raw)
    np.testing.assert_array_equal(read_dicom(raw).array, read_dicom(src).array)


def test_non_dicom_inputs(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("hello, I am a text file\n")
    assert not is_dicom_file(text)
    assert not is_dicom_file(tmp_path)
    assert not is_dicom_file(tmp_path / "missing.dcm")
    with pytest.raises(UnsupportedFormatError, match="not a DICOM file"):
        read_dicom(text)
    with pytest.raises(ScanError):
        read_dicom(tmp_path / "missing.dcm")


def _mono1(path, pixels, bits_stored, signed, slope=None, intercept=None):
    write_slice(path, pixels, ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0), series_uid=generate_uid(),
                study_uid=generate_uid(), instance=1, bits_stored=bits_stored, signed=signed,
                slope=slope, intercept=intercept, photometric="MONOCHROME1", modality="DX")


@pytest.mark.parametrize("bits, signed, slope, intercept, lo, hi", [
    (12, False, None, None, 0, 4095),
    (12, True, None, None, -2048, 2047),
    (12, False, 2.0, -100.0, -100.0, 4095 * 2.0 - 100.0),
])
def test_monochrome1_is_inverted_over_the_stored_range(tmp_path, bits, signed, slope, intercept, lo, hi):
    pixels = (np.arange(12 * 16).reshape(12, 16) * 7 - (600 if signed else 0)).astype(np.int16)
    _mono1(tmp_path / "x.dcm", pixels, bits, signed, slope, intercept)
    scan = read_dicom(tmp_path / "x.dcm")
    values = pixels.astype(np.float64) * (slope or 1.0) + (intercept or 0.0)
    assert scan.photometric == "MONOCHROME2" and scan.metadata["photometric_original"] == "MONOCHROME1"
    np.testing.assert_array_equal(scan.array[:, :, 0], (lo + hi - values).T)
    assert scan.array.dtype == (np.float32 if slope else (np.int16 if signed else np.uint16))
    assert scan.metadata["window_center"] == pytest.approx(lo + hi - 40)  # window follows the inversion


def _enhanced_ct(path, offsets, intercepts):
    """An Enhanced CT file: orientation/spacing shared, position and rescale per frame."""
    rot = rotation(20, 20)
    row, col = rot[:, 0], rot[:, 1]
    normal = np.cross(row, col)
    origin = np.array([10.0, -5.0, 30.0])
    frames = [(np.arange(12 * 16).reshape(12, 16) + 1000 * f).astype(np.uint16) for f in range(len(offsets))]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(offsets), 12, 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    orient, measures = Dataset(), Dataset()
    orient.ImageOrientationPatient = [round(float(v), 8) for v in np.r_[row, col]]
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.6], 2.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orient], [measures]
    per_frame = []
    for off, icpt in zip(offsets, intercepts):
        item, pos, pvt, voi = Dataset(), Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [round(float(v), 6) for v in origin + off * normal]
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, icpt, "HU"
        voi.WindowCenter, voi.WindowWidth = 50, 350
        item.PlanePositionSequence, item.PixelValueTransformationSequence = [pos], [pvt]
        item.FrameVOILUTSequence = [voi]
        per_frame.append(item)
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)
    positions = [origin + off * normal for off in offsets]
    return frames, positions


def test_enhanced_multiframe_uses_per_frame_groups_and_sorts_along_normal(tmp_path):
    offsets, intercepts = [4.0, 0.0, 8.0, 2.0, 6.0], [-1024.0, -1000.0, 0.0, 10.0, -5.0]
    frames, positions = _enhanced_ct(tmp_path / "e.dcm", offsets, intercepts)
    scan = read_dicom(tmp_path / "e.dcm")
    order = np.argsort(offsets)
    assert scan.shape == (16, 12, 5) and scan.array.dtype == np.float32
    for k, f in enumerate(order):
        np.testing.assert_array_equal(scan.array[:, :, k], (frames[f].astype(np.float64) + intercepts[f]).T)
        np.testing.assert_allclose(scan.affine @ [0, 0, k, 1], np.r_[LPS_TO_RAS @ positions[f], 1], atol=1e-3)
    np.testing.assert_allclose(scan.spacing, (0.6, 0.5, 2.0), atol=1e-5)
    assert scan.metadata["window_center"] == 50 and scan.metadata["number_of_frames"] == 5
    assert scan.metadata["rescale_varies"] and scan.metadata["slice_report"]["spacing"] == pytest.approx(2.0)


def test_enhanced_multiframe_with_a_missing_frame_is_named_in_a_warning_as_a_series_is(tmp_path):
    """Frames at 0, 2, 4, 8, 10 mm: the affine's even 2.5 mm step puts the frames at 4 and 8 mm 1 mm off.
    read_series warned about such a gap; read_dicom kept it in the slice report without a word."""
    frames, positions = _enhanced_ct(tmp_path / "e.dcm", [8.0, 0.0, 4.0, 10.0, 2.0], [0.0] * 5)
    with pytest.warns(UserWarning) as caught:
        scan = read_dicom(tmp_path / "e.dcm")
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 'e.dcm'}: 1 missing slices, uneven slice spacing, the affine spaces the 5 slices evenly, so a "
        "slice lies up to 1 mm from its real position (see metadata['slice_report'])"]
    placed = [(scan.affine @ [0, 0, k, 1])[:3] for k in range(5)]
    truth = [LPS_TO_RAS @ positions[f] for f in np.argsort([8.0, 0.0, 4.0, 10.0, 2.0])]
    np.testing.assert_allclose([np.linalg.norm(p - t) for p, t in zip(placed, truth)], [0, 0.5, 1, 0.5, 0], atol=1e-5)


def test_decoder_panic_becomes_corrupt_file_error(tmp_path, monkeypatch):
    """pyo3 decoders raise PanicException, a BaseException: it must not escape."""

    class PanicException(BaseException):
        pass

    def explode(self):
        raise PanicException("called `Result::unwrap()` on an `Err` value")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(explode))
    with pytest.raises(CorruptFileError, match="cannot decode pixel data"):
        read_dicom(get_testdata_file("MR_small_RLE.dcm"))

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(interrupt))
    with pytest.raises(KeyboardInterrupt):
        read_dicom(get_testdata_file("MR_small_RLE.dcm"))


def test_garbage_rle_fragment_is_corrupt(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    ds.PixelData = encapsulate([b"\x02\x00\x00\x00" + b"\xff" * 200])
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(CorruptFileError, match="bad.dcm"):
        read_dicom(tmp_path / "bad.dcm")


def test_header_only_read_of_cut_file(tmp_path):
    """A file cut inside its header: a clear ScanError, never a pydicom traceback."""
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:700])
    with pytest.raises(CorruptFileError, match="CT Image Storage object without pixel data"):
        read_dicom(cut)


# ----------------------------------------------------------------------------- real corpus (../shared)

LOSSLESS_GROUPS = {
    "emri_small.dcm": ["emri_small_RLE.dcm", "emri_small_big_endian.dcm", "emri_small_jpeg_2k_lossless.dcm",
                       "emri_small_jpeg_ls_lossless.dcm"],
    "MR2_UNCR.dcm": ["MR2_J2KR.dcm"],
    "US1_UNCR.dcm": ["US1_J2KR.dcm"],
}


@pytest.mark.parametrize("ref, other", [(r, o) for r, group in LOSSLESS_GROUPS.items() for o in group])
def test_lossless_groups_decode_identically(shared, ref, other):
    a, b = read_dicom(shared(DICOM + ref)), read_dicom(shared(DICOM + other))
    assert a.array.dtype == b.array.dtype and a.array.shape == b.array.shape
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.photometric == b.photometric


def test_emri_frames_in_file_order_with_spacing_between_slices(shared):
    path = shared(DICOM + "emri_small.dcm")
    scan = read_dicom(path)
    raw = raw_pixels(path)
    assert scan.shape == (64, 64, 10) and scan.array.dtype == np.uint16
    np.testing.assert_array_equal(scan.array, raw.transpose(2, 1, 0))
    assert scan.spacing[2] == pytest.approx(1.2)  # no geometry: SpacingBetweenSlices, identity orientation


def test_ultrasound_rgb(shared):
    path = shared(DICOM + "US1_J2KR.dcm")
    scan = read_dicom(path)
    assert scan.photometric == "RGB" and scan.array.shape == (640, 480, 1, 3)
    np.testing.assert_array_equal(scan.array[:, :, 0], raw_pixels(shared(DICOM + "US1_UNCR.dcm")).transpose(1, 0, 2))


@pytest.mark.parametrize("name", ["liver.dcm", "liver_j2k.dcm", "liver_expb.dcm", "liver_rle.dcm",
                                  "liver_deflate.dcm"])
def test_seg_objects_are_not_images(shared, name):
    with pytest.raises(NotAnImageError, match="Segmentation Storage \\(SEG\\) holds no image"):
        read_dicom(shared(DICOM + name))


def test_too_short_j2k_is_corrupt(shared):
    with pytest.raises(CorruptFileError, match="too_short.dcm: pixel data is missing or cut short"):
        read_dicom(shared(DICOM + "emri_small_jpeg_2k_lossless_too_short.dcm"))


def test_rg3_monochrome1_is_inverted(shared):
    path = shared(DICOM + "RG3_J2KR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 10
    scan = read_dicom(path)
    assert scan.photometric == "MONOCHROME2" and scan.array.dtype == np.uint16
    np.testing.assert_array_equal(scan.array[:, :, 0], (1023 - ds.pixel_array).T)
    assert scan.metadata["window_center"] == 1023 - float(ds.WindowCenter)


def test_rg3_lossy_is_close_to_lossless(shared):
    lossless = read_dicom(shared(DICOM + "RG3_J2KR.dcm")).array.astype(np.float64)
    lossy = read_dicom(shared(DICOM + "RG3_J2KI.dcm")).array.astype(np.float64)
    assert np.mean(np.abs(lossless - lossy)) < 5 and not np.array_equal(lossless, lossy)


def test_ect_supplemental_two_frames(shared):
    path = shared(DICOM + "eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    scan = read_dicom(path)
    assert scan.shape == (512, 512, 2) and scan.array.dtype == np.float32
    positions = [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float)
                 for f in ds.PerFrameFunctionalGroupsSequence]
    raw = ds.pixel_array
    # IOP (-1,0,0,0,1,0): normal is -z, so the frame at z=-149 comes first.
    for k, f in enumerate([1, 0]):
        np.testing.assert_allclose(scan.affine @ [0, 0, k, 1], np.r_[LPS_TO_RAS @ positions[f], 1], atol=1e-3)
        np.testing.assert_array_equal(scan.array[:, :, k], (raw[f].astype(np.float64) - 1024).T)
    assert scan.metadata["window_center"] == 49 and scan.metadata["window_width"] == 102


def test_jpeg_lossless_signed(shared):
    path = shared(DICOM + "JPEG-LL.dcm")
    scan = read_dicom(path)
    assert scan.array.dtype == np.int16
    np.testing.assert_array_equal(scan.array[:, :, 0], raw_pixels(path).T)


def test_bad_sequence_loads_or_fails_cleanly(shared):
    try:
        scan = read_dicom(shared(DICOM + "bad_sequence.dcm"))
    except ScanError:
        return
    assert scan.shape == (512, 512, 1) and scan.modality == "CT"


def test_a_damaged_compressed_frame_is_one_line_not_the_decoders_traceback_in_the_log(tmp_path, caplog):
    """pydicom logs each decoder's failure at ERROR with its traceback (about 25 lines per file) before it
    raises; where root logging is configured (``medtl listen``, the ``medtl pacs`` commands) that reached stderr for
    every damaged instance received. The error medtl raises already says it in one line."""
    import logging

    from medtl.demo.cohort import sample_path

    src = next(p for p in sorted(sample_path("ct2d").parent.glob("*.dcm"))
               if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90")
    ds = pydicom.dcmread(src)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(tmp_path / "cut.dcm")
    with caplog.at_level(logging.DEBUG), pytest.raises(CorruptFileError, match="cut.dcm: cannot decode pixel data"):
        read_dicom(tmp_path / "cut.dcm")
    assert [r.levelname for r in caplog.records if r.name.startswith("pydicom") and r.levelno >= logging.ERROR] == []
