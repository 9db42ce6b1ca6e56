"""The test 'hospital': sample-cohort DICOM (2D slices, part of one series) and real ../shared files,
plus the awkward objects a real study holds (a text SR, a SEG, a series that does not decode)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.pacs.conftest import SAMPLE, shared_dicom

CT_SLICES = ["P0001_1.dcm", "P0002_1.dcm", "P0011_1.dcm", "P0012_1.dcm"]
SHARED_IMAGES = ["MR2_J2KR.dcm", "US1_J2KR.dcm", "JPEG-LL.dcm"]


def text_sr(study_source: Path, out: Path) -> Path:
    """A Basic Text SR in the study of ``study_source`` (a non-image object a scorer must skip)."""
    src = pydicom.dcmread(study_source, stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(out), {}, file_meta=meta, preamble=b"\0" * 128)
    for attr in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                 "StudyID", "ReferringPhysicianName", "PatientBirthDate", "PatientSex"):
        if attr in src:
            setattr(ds, attr, src.get(attr))
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesNumber = 77
    ds.InstanceNumber = 1
    ds.Manufacturer = "another vendor"
    ds.ValueType = "CONTAINER"
    ds.ContentDate = dt.date.today().strftime("%Y%m%d")
    ds.ContentTime = "120000"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.save_as(out, enforce_file_format=True)
    return out


def undecodable(source: Path, out: Path) -> Path:
    """``source`` (JPEG 2000) with its code stream zeroed: stores fine, never decodes."""
    ds = pydicom.dcmread(source)
    size = len(ds.PixelData) - 64
    ds.PixelData = encapsulate([b"\xff\x4f" + b"\0" * (size - 2)])
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription = "broken on purpose"
    ds.save_as(out, enforce_file_format=True)
    return out


def build(folder: Path) -> dict:
    """Write the hospital's files into ``folder``; what each is expected to give."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [SAMPLE / "ct2d" / n for n in CT_SLICES]
    series = sorted((SAMPLE / "series" / "P0041").glob("*.dcm"))[:4]
    files += series
    shared = [shared_dicom(n) for n in SHARED_IMAGES]
    files += shared
    seg = shared_dicom("liver.dcm")
    files.append(seg)
    sr = text_sr(series[0], folder / "text_sr.dcm")
    bad = undecodable(shared_dicom("MR2_J2KR.dcm"), folder / "broken.dcm")
    files += [sr, bad]
    sops = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    good = [f for f in files if f not in (seg, sr, bad)]
    return {"files": files, "sops": sops,
            "good": {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in good},
            "non_image": {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in (seg, sr)},
            "broken": str(pydicom.dcmread(bad, stop_before_pixels=True).SOPInstanceUID),
            "patient_values": {str(pydicom.dcmread(f, stop_before_pixels=True).get(a, "")) for f in files
                               for a in ("PatientName", "PatientID") if len(str(pydicom.dcmread(
                                   f, stop_before_pixels=True).get(a, ""))) >= 4}}


def upload(orthanc, files) -> None:
    for f in files:
        orthanc.rest("POST", "/instances", Path(f).read_bytes())
