"""What kind of DICOM object a data set is: the SOP class and transfer syntax tables.

Objects that hold no image (SEG, RT structure sets/plans/doses, SR, presentation
states, KOS, encapsulated PDF, raw data, DICOMDIR...) are recognised from their
header alone, so they are refused before any pixel decoding.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID

from medtl.errors import NotAnImageError

_STORAGE = "1.2.840.10008.5.1.4.1.1."
#: SOP classes that carry no image to classify (exact UIDs).
NON_IMAGE_SOP_CLASSES = frozenset({
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
    _STORAGE + "66",  # Raw Data
    _STORAGE + "67",  # Real World Value Mapping
    _STORAGE + "90.1",  # Content Assessment Results
})
#: UID prefixes of whole families of non-image SOP classes.
NON_IMAGE_SOP_PREFIXES = (
    _STORAGE + "9.",  # waveforms (ECG, audio, hemodynamic...)
    _STORAGE + "11.",  # presentation states
    _STORAGE + "66.",  # registration, fiducials, SEG, surface/label-map segmentation, tractography
    _STORAGE + "68.",  # surface scan mesh / point cloud
    _STORAGE + "88.",  # structured reports, key object selection
    _STORAGE + "104.",  # encapsulated PDF / CDA / STL / OBJ / MTL
    _STORAGE + "200.",  # protocol storage
    _STORAGE + "481.",  # RT objects (RT Image, 481.1, is let through below)
    "1.2.840.10008.5.1.4.34.",  # second-generation RT
    "1.2.840.10008.5.1.4.38.",  # hanging protocols
    "1.2.840.10008.5.1.4.39.",  # colour palettes
)
_IMAGE_EXCEPTIONS = frozenset({_STORAGE + "481.1"})  # RT Image Storage is an image
#: Modalities of non-image objects, used when the SOP class is missing or private.
NON_IMAGE_MODALITIES = frozenset({
    "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE_NONE", "SR", "PR", "KO", "DOC",
    "REG", "FID", "RWV", "PLAN", "ECG", "HD", "AU", "RESP", "AR",
})
#: The fix offered for an object that only refers to images.
FIX_REFERENCED = "load the referenced image series instead"


def sop_class(ds: Dataset) -> str:
    """The SOP Class UID, from the data set or else its file meta (``""`` when neither has it)."""
    sop = ds.get("SOPClassUID")
    if not sop:
        meta = getattr(ds, "file_meta", None)
        sop = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return str(sop or "")


def sop_class_name(ds: Dataset) -> str:
    """The SOP class's name (``"CT Image Storage"``), or ``""`` without a SOP Class UID."""
    sop = sop_class(ds)
    return UID(sop).name if sop else ""


def non_image_kind(ds: Dataset) -> str | None:
    """``"DICOM <SOP class name> (<modality>)"`` when ``ds`` holds no image, else None."""
    sop = sop_class(ds)
    modality = str(ds.get("Modality", "") or "").upper()
    listed = sop in NON_IMAGE_SOP_CLASSES or (
        sop.startswith(NON_IMAGE_SOP_PREFIXES) and sop not in _IMAGE_EXCEPTIONS)
    name = UID(sop).name if sop else ""
    unknown_class = not name.endswith("Image Storage")
    if listed or "DirectoryRecordSequence" in ds or (unknown_class and modality in NON_IMAGE_MODALITIES):
        if sop == "1.2.840.10008.1.3.10" or "DirectoryRecordSequence" in ds:
            return "DICOMDIR (a media directory)"
        return f"DICOM {name or 'object'} ({modality or 'no modality'})"
    return None


def raise_if_not_image(ds: Dataset, name: str) -> None:
    """Raise :class:`NotAnImageError` (naming ``name``) when ``ds`` holds no image."""
    kind = non_image_kind(ds)
    if kind is not None:
        fix = ("read the folder it indexes with read_series" if kind.startswith("DICOMDIR")
               else FIX_REFERENCED)
        raise NotAnImageError(name, f"{kind} holds no image to classify", fix)


def transfer_syntax_name(ds: Dataset) -> str:
    """The transfer syntax's name (``"JPEG 2000 Image Compression (Lossless Only)"``), or ``"unknown"``."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(ts)).name if ts else "unknown"
