"""A seeded corpus of hostile, huge and subtly broken scans, shared by the tests and the benchmark.

Two parts:

- :func:`bomb_cases` writes named files whose header claims far more than they hold (or
  that inflate far beyond their size): the cases of issue 18. ``small=True`` keeps every
  file tiny and fast to make (the unit tests); ``small=False`` also builds the real
  compressed bombs (a 9 MB gzip of a 1024³ volume, a 3 GiB zip member, a 16384² deflated
  DICOM) for ``benchmarks/bench_hostile.py``.
- :func:`fuzz_cases` mutates real DICOM files (truncations, bit flips, length-field
  edits, header claims, junk insertions) with a seeded RNG: the same seed gives the same
  bytes on every machine.

Nothing here imports medtl: the corpus is plain bytes.

    python -m tests.io.hostile OUTDIR [--big]   # write the bomb cases to OUTDIR and list them
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import sys
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Tags whose values the "claim" mutations rewrite (group, element, VR, struct code).
CLAIM_TAGS = {
    "NumberOfFrames": ((0x0028, 0x0008), "IS"),
    "Rows": ((0x0028, 0x0010), "US"),
    "Columns": ((0x0028, 0x0011), "US"),
    "BitsAllocated": ((0x0028, 0x0100), "US"),
    "SamplesPerPixel": ((0x0028, 0x0002), "US"),
}
#: Values a forged header may claim.
CLAIM_VALUES = [0, 1, 3, 7, 255, 4096, 65535, 2**31 - 1, -1]


@dataclass(frozen=True)
class Case:
    """One hostile file: ``name`` (stable id), ``path``, ``issue`` (what it attacks), ``expect``
    (the ScanError subclass name, or ``"ScanError"``/``"ok"``/``"warn"``)."""

    name: str
    path: Path
    issue: str
    expect: str = "ScanError"


# ----------------------------------------------------------------------------- builders

def _mr_small() -> "object":
    import pydicom
    from pydicom.data import get_testdata_file

    return pydicom.dcmread(get_testdata_file("MR_small.dcm"))


def _dicom(path: Path, **changes: object) -> Path:
    """MR_small (64 x 64, 9 KB) with some attributes changed (``None`` deletes one)."""
    ds = _mr_small()
    for key, value in changes.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)
    return path


def _nifti_header(shape: tuple[int, ...], datatype: int = 4, bitpix: int = 16) -> bytes:
    """A NIfTI-1 single-file header (348 bytes + 4 bytes extension flag) declaring ``shape``."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16 if datatype == 4 else np.uint8)
    hdr.set_data_shape(shape)
    hdr.set_qform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\x00" * 4


def _gzip_stream(path: Path, head: bytes, zeros: int, chunk: int = 1 << 24) -> Path:
    """``head`` then ``zeros`` zero bytes, gzip-compressed without holding them in memory."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as gz:
        gz.write(head)
        block = bytes(min(chunk, max(zeros, 1)))
        left = zeros
        while left > 0:
            n = min(left, len(block))
            gz.write(block[:n])
            left -= n
    return path


def _png_claim(path: Path, width: int, height: int) -> Path:
    """A 100-byte PNG whose IHDR claims ``width`` x ``height`` 8-bit gray pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _jpegls_claim(path: Path, rows: int, cols: int) -> Path:
    """pydicom's JPEG-LS MR_small (64 x 64) with its frame header (SOF55) claiming ``rows`` x ``cols``."""
    from pydicom.data import get_testdata_file

    data = bytearray(Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")).read_bytes())
    at = data.find(b"\xff\xf7")
    data[at + 5:at + 9] = struct.pack(">HH", rows, cols)
    path.write_bytes(bytes(data))
    return path


def _tiff_claim(path: Path, width: int, height: int) -> Path:
    """A minimal little-endian TIFF whose IFD claims ``width`` x ``height`` 8-bit pixels (holds 16 bytes)."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd_offset = 8 + 16
    body = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset) + bytes(16))
    body += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HHI", tag, typ, count)
        packed += struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        body += packed
    body += struct.pack("<I", 0)
    path.write_bytes(bytes(body))
    return path


def _deflated_dicom(path: Path, rows: int, cols: int, frames: int = 1) -> Path:
    """A Deflated Explicit VR Little Endian DICOM of ``frames`` x ``rows`` x ``cols`` uint16 zeros,
    built by streaming (never holding the inflated data set in memory)."""
    import pydicom
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _mr_small()
    del ds.PixelData
    ds.Rows, ds.Columns = rows, cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    nbytes = rows * cols * 2 * frames
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, nbytes)
    meta = pydicom.filebase.DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = bytes(1 << 24)
    with open(path, "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM" + meta.getvalue())
        fh.write(comp.compress(body.getvalue() + pixel_header))
        left = nbytes
        while left > 0:
            n = min(left, len(block))
            fh.write(comp.compress(block[:n]))
            left -= n
        fh.write(comp.flush())
    return path


def _zip_bomb(path: Path, member_bytes: int, extra_members: dict[str, bytes] | None = None) -> Path:
    """A zip with one member of ``member_bytes`` zeros (streamed in, never held in memory)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, data in (extra_members or {}).items():
            zf.writestr(name, data)
        info = zipfile.ZipInfo("bomb.dcm")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=member_bytes > 2**31) as fh:
            block = bytes(1 << 24)
            left = member_bytes
            while left > 0:
                n = min(left, len(block))
                fh.write(block[:n])
                left -= n
    return path


def _series_missing_position(folder: Path) -> Path:
    """Four CT slices with geometry; the third lacks ImagePositionPatient."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    for k in range(4):
        ds = _mr_small()
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series, study
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = 4 - k
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 5.0 * k]
        if k == 2:
            del ds.ImagePositionPatient
        ds.PixelData = (np.full((64, 64), k, dtype=np.int16)).tobytes()
        ds.save_as(folder / f"slice{k}.dcm")
        assert isinstance(ds, pydicom.Dataset)
    return folder


def _unknown_vr(path: Path) -> Path:
    """MR_small with the VR of Modality replaced by ``ZZ`` (pydicom: NotImplementedError)."""
    from pydicom.data import get_testdata_file

    raw = bytearray(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    at = raw.find(b"\x08\x00\x60\x00CS")
    raw[at + 4: at + 6] = b"ZZ"
    path.write_bytes(bytes(raw))
    return path


def bomb_cases(folder: str | Path, small: bool = True) -> list[Case]:
    """Write the named hostile cases into ``folder``; ``small=False`` adds the big compressed bombs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    f = folder
    cases = [
        Case("dicom_frames_2147483647", _dicom(f / "frames.dcm", NumberOfFrames=2**31 - 1),
             "9 KB DICOM claiming 2147483647 frames", "LimitError"),
        Case("dicom_frames_4000_in_9kb", _dicom(f / "frames4000.dcm", NumberOfFrames=4000),
             "claims 4000 frames, holds one", "CorruptFileError"),
        Case("dicom_million_1x1_frames", _dicom(f / "tinyframes.dcm", Rows=1, Columns=1, NumberOfFrames=10**6,
                                                PixelData=bytes(2 * 10**6)),
             "2 MB DICOM holding a million 1 x 1 frames (minutes of per-frame header work)", "LimitError"),
        Case("dicom_rows_65535", _dicom(f / "rows.dcm", Rows=65535, Columns=65535),
             "claims 65535 x 65535", "LimitError"),
        Case("dicom_bits_allocated_7", _dicom(f / "bits7.dcm", BitsAllocated=7), "BitsAllocated 7",
             "CorruptFileError"),
        Case("dicom_unknown_vr", _unknown_vr(f / "vr.dcm"), "unknown VR (pydicom NotImplementedError)",
             "CorruptFileError"),
        Case("dicom_slope_0", _dicom(f / "slope0.dcm", RescaleSlope=0, RescaleIntercept=5), "RescaleSlope 0",
             "CorruptFileError"),
        Case("dicom_slope_1e39", _dicom(f / "slope1e39.dcm", RescaleSlope="1e39", RescaleIntercept=0),
             "RescaleSlope 1e39: infinite pixels", "CorruptFileError"),
        Case("dicom_slope_nan", _dicom(f / "slopenan.dcm", RescaleSlope="nan"), "RescaleSlope NaN",
             "CorruptFileError"),
        Case("dicom_spacing_missing", _dicom(f / "nospacing.dcm", PixelSpacing=None), "no PixelSpacing", "warn"),
        Case("dicom_spacing_zero", _dicom(f / "spacing0.dcm", PixelSpacing=[0, 0]), "PixelSpacing 0", "warn"),
        Case("dicom_spacing_negative", _dicom(f / "spacingneg.dcm", PixelSpacing=[-0.5, -0.5]),
             "negative PixelSpacing", "warn"),
        Case("series_slice_without_position", _series_missing_position(f / "series_nopos"),
             "one slice lacks ImagePositionPatient", "SeriesError"),
        Case("nifti_gz_claims_1200_cubed", _gzip_stream(f / "claim.nii.gz", _nifti_header((1200, 1200, 1200)), 0),
             "100-byte .nii.gz declaring 1200^3 int16", "LimitError"),
        Case("nifti_gz_claims_renamed_bin", _gzip_stream(f / "claim.bin", _nifti_header((1200, 1200, 1200)), 0),
             "the same, renamed .bin", "LimitError"),
        Case("nifti_truncated", _plain(f / "short.nii", _nifti_header((256, 256, 256)) + bytes(1000)),
             "uncompressed NIfTI holding 1 KB of a 32 MB claim", "CorruptFileError"),
        Case("png_claims_100000_squared", _png_claim(f / "huge.png", 100_000, 100_000),
             "100-byte PNG claiming 10^10 pixels", "LimitError"),
        Case("tiff_claims_60000_squared", _tiff_claim(f / "huge.tif", 60_000, 60_000),
             "200-byte TIFF claiming 3.6e9 pixels", "LimitError"),
        Case("deflated_dicom_claims_16384_squared_small", _deflated_dicom(f / "deflate_claim.dcm", 16384, 16384, 1)
             if not small else _deflated_header_only(f / "deflate_claim.dcm", 16384, 16384),
             "deflated DICOM of 16384^2", "LimitError"),
        Case("png_1_by_60m_in_69_bytes", _png_claim(f / "tall.png", 1, 60_000_000),
             "69-byte PNG claiming 1 x 60,000,000 (PIL fills it with zeros)", "CorruptFileError"),
        Case("jpegls_frame_claims_65535_squared", _jpegls_claim(f / "jls.dcm", 65535, 65535),
             "6 KB JPEG-LS DICOM of 64 x 64 whose frame header claims 65535^2", "CorruptFileError"),
        Case("dicom_orientation_scaled", _dicom(f / "iop.dcm", ImageOrientationPatient=[2, 0, 0, 0, 2, 0]),
             "ImageOrientationPatient of length-2 vectors (doubles the spacing)", "CorruptFileError"),
    ]
    if not small:
        cases += [
            Case("nifti_gz_1024_cubed", _gzip_stream(f / "big.nii.gz", _nifti_header((1024, 1024, 1024)),
                                                      1024**3 * 2), "9 MB gzip of a 1024^3 int16 volume",
                 "LimitError"),
            Case("zip_3gib_member", _zip_bomb(f / "bomb.zip", 3 * 2**30), "3 MB zip with one 3 GiB member",
                 "CorruptFileError"),
            Case("deflated_dicom_30x8192_squared", _deflated_dicom(f / "deflate_frames.dcm", 8192, 8192, 30),
                 "deflated DICOM inflating to 3.75 GiB", "LimitError"),
        ]
    else:
        cases.append(Case("zip_member_over_limit", _zip_bomb(f / "bomb.zip", 8 * 2**20),
                          "zip member of 8 MiB (test sets MEDTL_MAX_BYTES=4MiB)", "CorruptFileError"))
    return cases


def _plain(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _deflated_header_only(path: Path, rows: int, cols: int) -> Path:
    """A deflated DICOM claiming ``rows`` x ``cols`` whose pixel data is cut after 1 MiB (fast to make)."""
    return _deflated_dicom_truncated(path, rows, cols, 1 << 20)


def _deflated_dicom_truncated(path: Path, rows: int, cols: int, keep: int) -> Path:
    import pydicom
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _mr_small()
    del ds.PixelData
    ds.Rows, ds.Columns = rows, cols
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    meta = pydicom.filebase.DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, rows * cols * 2)
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = comp.compress(body.getvalue() + pixel_header + bytes(keep)) + comp.flush()
    path.write_bytes(b"\x00" * 128 + b"DICM" + meta.getvalue() + data)
    return path


# ----------------------------------------------------------------------------- fuzzing

MUTATIONS = ("truncate", "bitflip", "length_edit", "claim", "junk", "zero_run")


def _element_offsets(data: bytes) -> list[int]:
    """Offsets of explicit-VR element headers (tag + 2 letter VR), found by pattern."""
    out = []
    for i in range(132, len(data) - 8):
        vr = data[i + 4: i + 6]
        if vr.isalpha() and vr.isupper() and data[i + 1] in (0x00, 0x7F, 0x00):
            out.append(i)
    return out


def mutate(data: bytes, rng: random.Random, kind: str | None = None) -> tuple[str, bytes]:
    """One seeded mutation of a DICOM file's bytes: ``(description, new bytes)``."""
    kind = kind or rng.choice(MUTATIONS)
    buf = bytearray(data)
    n = len(buf)
    if kind == "truncate":
        cut = rng.randrange(1, n)
        return f"truncate@{cut}", bytes(buf[:cut])
    if kind == "bitflip":
        k = rng.choice([1, 2, 8, 32])
        limit = min(n, 4096) if rng.random() < 0.7 else n  # headers live in the first KBs
        for _ in range(k):
            i = rng.randrange(min(132, limit - 1), limit)
            buf[i] ^= 1 << rng.randrange(8)
        return f"bitflip x{k}", bytes(buf)
    if kind == "length_edit":
        offsets = _element_offsets(bytes(buf[: min(n, 8192)]))
        if not offsets:
            return mutate(data, rng, "bitflip")
        at = rng.choice(offsets)
        vr = bytes(buf[at + 4: at + 6])
        value = rng.choice([0, 1, 2, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, n, rng.randrange(0, 1 << 16)])
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR", b"OV"):
            buf[at + 8: at + 12] = struct.pack("<I", value & 0xFFFFFFFF)
        else:
            buf[at + 6: at + 8] = struct.pack("<H", value & 0xFFFF)
        return f"length_edit@{at} {vr.decode('ascii', 'replace')}={value}", bytes(buf)
    if kind == "claim":
        return _claim(data, rng)
    if kind == "junk":
        at = rng.randrange(132, n) if n > 132 else 0
        junk = bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 16, 256])))
        return f"junk@{at}+{len(junk)}", bytes(buf[:at] + junk + buf[at:])
    if kind == "zero_run":
        at = rng.randrange(132, n) if n > 132 else 0
        length = rng.choice([4, 64, 1024, 1 << 16])
        buf[at: at + length] = bytes(len(buf[at: at + length]))
        return f"zero_run@{at}+{length}", bytes(buf)
    raise ValueError(kind)


def _claim(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Rewrite a size-defining attribute through pydicom (a forged but well-formed header)."""
    import warnings

    import pydicom

    name = rng.choice(sorted(CLAIM_TAGS))
    value = rng.choice(CLAIM_VALUES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            if name == "NumberOfFrames":
                ds.NumberOfFrames = str(value)
            else:
                setattr(ds, name, value & 0xFFFF)
            out = io.BytesIO()
            ds.save_as(out)
        return f"claim {name}={value}", out.getvalue()
    except Exception:  # noqa: BLE001 - not re-writable: fall back to raw edits
        return mutate(data, rng, "length_edit")


def fuzz_cases(sources: list[Path], n: int, seed: int = 0) -> Iterator[tuple[int, str, str, bytes]]:
    """``n`` mutated files ``(index, source name, mutation, bytes)``, the same for the same seed."""
    rng = random.Random(seed)
    originals = {p: p.read_bytes() for p in sorted(sources)}
    names = sorted(originals)
    for i in range(n):
        src = names[i % len(names)]
        desc, data = mutate(originals[src], rng)
        yield i, src.name, desc, data


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile_corpus")
    for case in bomb_cases(out, small="--big" not in sys.argv):
        size = sum(p.stat().st_size for p in ([case.path] if case.path.is_file() else case.path.rglob("*")))
        print(f"{case.name:45s} {size:>12,d} B  {case.issue}")
