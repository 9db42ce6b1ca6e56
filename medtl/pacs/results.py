"""Result objects for the PACS, built with ``highdicom`` in the *source* study (same
StudyInstanceUID, patient and frame of reference; new series referencing the source instances):

- **Comprehensive 3D SR** (TID 1500 measurement report): the finding (the decision, coded), the
  probability of every class, the decision threshold, and the algorithm's name and version from
  the model card (``AlgorithmIdentification``), with the observer device named after the model.
- **Secondary Capture** (RGB) of the labelled saliency overlay, for viewers that show only images.
- **Fractional Segmentation** of the saliency map on the source pixel grid, one frame per source
  frame, with the source's plane positions/orientation (projection images too; a Parametric Map
  would need full 3D geometry).

UIDs are derived from (model, study key, object kind), so building the results again gives the
same SOPInstanceUIDs: a push repeated after a crash stores the same objects, not new copies.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medtl.errors import MedtlError, one_line
from medtl.io.scan import Scan

__all__ = ["MANUFACTURER", "RESULT_SERIES", "ResultObjects", "build_results", "result_key", "finding_code", "frames_on_source_grid",
           "is_medtl_result", "overlay_picture", "result_uid"]

#: ``Manufacturer`` of every object medtl writes (a listener ignores these when they come back).
MANUFACTURER = "medtl"
#: Series number and description of each result kind.
RESULT_SERIES = {"sr": (9901, "medtl: AI classification report"), "sc": (9902, "medtl: saliency overlay"),
                 "seg": (9903, "medtl: saliency map")}
#: Classes with a standard code (SNOMED CT); other class names get a private code (99MEDTL).
KNOWN_FINDINGS = {
    "pneumonia": ("233604007", "SCT", "Pneumonia"),
    "normal": ("17621005", "SCT", "Normal"),
    "nodule": ("27925004", "SCT", "Nodule"),
    "covid-19": ("840539006", "SCT", "COVID-19"),
}


def result_key(key: str, method: str) -> str:
    """The key result UIDs derive from: a study's ``scores.csv`` key (``sop:UID`` / ``series:UID``), with
    the saliency method when it is not the default, so that results made another way never reuse the
    UIDs of published ones (the app's "Send to PACS" and ``medtl pacs`` agree)."""
    from medtl.explain import DEFAULT_METHOD

    return key if not method or method == DEFAULT_METHOD else f"{key}#{method}"


def result_uid(*parts: str) -> str:
    """A DICOM UID determined by ``parts`` (same parts, same UID)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[MANUFACTURER, *parts]))


def finding_code(name: str) -> Any:
    """The coded finding of class ``name``. A private code longer than 16 characters is written whole
    (highdicom puts it in LongCodeValue): cut to 16, the codes of two classes could be one."""
    from highdicom.sr import CodedConcept

    value, scheme, meaning = KNOWN_FINDINGS.get(name.lower(), (name, "99MEDTL", f"class {name}"[:64]))
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def is_medtl_result(ds: Any) -> bool:
    """``True`` for an object medtl wrote (SR/SC/SEG): never scored as a study."""
    return str(ds.get("Manufacturer", "") or "") == MANUFACTURER and \
        str(ds.get("SeriesDescription", "") or "").startswith("medtl:")


@dataclass
class ResultObjects:
    sr: Any
    sc: Any | None
    seg: Any | None

    @property
    def datasets(self) -> list[Any]:
        return [d for d in (self.sr, self.sc, self.seg) if d is not None]


# --- geometry ------------------------------------------------------------------------------------

def _series_laterality(ds: Any) -> str | None:
    """The source series' Laterality, else its image's (ImageLaterality R or L: a mammogram or a hand
    radiograph often states only that); None when neither says (B and U have no series equivalent)."""
    if "Laterality" in ds:
        return ds.Laterality
    image = str(ds.get("ImageLaterality", "") or "").upper()
    return image if image in ("R", "L") else None


def _n_frames(ds: Any) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _frame_geometry(ds: Any, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(IPP, IOP (6,), PixelSpacing (row, col))`` of ``frame`` in LPS mm, or ``None`` (projection image)."""
    ipp = ds.get("ImagePositionPatient")
    iop = ds.get("ImageOrientationPatient")
    spacing = ds.get("PixelSpacing")
    if "PerFrameFunctionalGroupsSequence" in ds:
        per = ds.PerFrameFunctionalGroupsSequence[frame]
        shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]

        def find(seq: str, attr: str) -> Any:
            for group in (per, shared):
                if group is not None and seq in group and attr in group[seq][0]:
                    return group[seq][0][attr].value
            return None

        ipp = find("PlanePositionSequence", "ImagePositionPatient") or ipp
        iop = find("PlaneOrientationSequence", "ImageOrientationPatient") or iop
        spacing = find("PixelMeasuresSequence", "PixelSpacing") or spacing
    if ipp is None or iop is None or spacing is None:
        return None
    return (np.asarray(ipp, float), np.asarray(iop, float), np.asarray(spacing, float))


def frames_on_source_grid(saliency: Scan, sources: Sequence[Any]) -> np.ndarray:
    """The map resampled (nearest voxel) onto every source frame: ``(n_frames, Rows, Columns)`` in the
    order highdicom expects (source images in order, their frames in order).

    A frame with a position is located through the map's affine (any axis order or flip); a
    projection image without one reads slice ``k = frame`` with ``i`` along its rows.
    """
    arr = np.asarray(saliency.array, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr.mean(axis=3)
    inv = np.linalg.inv(saliency.affine)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    out = []
    index = 0
    for ds in sources:
        rows, cols = int(ds.Rows), int(ds.Columns)
        for f in range(_n_frames(ds)):
            geom = _frame_geometry(ds, f)
            if geom is None:
                v0, vc, vr = np.array([0.0, 0.0, float(index)]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
            else:
                ipp, iop, spacing = geom
                row_dir, col_dir = iop[:3], iop[3:]

                def vox(r: float, c: float) -> np.ndarray:
                    world = ipp + c * spacing[1] * row_dir + r * spacing[0] * col_dir
                    return (inv @ np.append(lps_to_ras @ world, 1.0))[:3]

                v0 = vox(0, 0)
                vc, vr = vox(0, 1) - v0, vox(1, 0) - v0
            r = np.arange(rows, dtype=np.float64)[:, None, None]
            c = np.arange(cols, dtype=np.float64)[None, :, None]
            idx = np.rint(v0[None, None, :] + c * vc[None, None, :] + r * vr[None, None, :]).astype(np.int64)
            bounds = np.array(arr.shape[:3])
            inside = np.all((idx >= 0) & (idx < bounds), axis=2)
            if not inside.any():
                raise MedtlError(f"saliency map does not cover frame {f + 1} of source {ds.SOPInstanceUID}")
            idx = np.clip(idx, 0, bounds - 1)
            frame = arr[idx[..., 0], idx[..., 1], idx[..., 2]]
            frame[~inside] = 0.0
            out.append(frame)
            index += 1
    return np.stack(out)


# --- the overlay picture --------------------------------------------------------------------------

def overlay_picture(scan: Scan, saliency: Scan, warning: str = "") -> np.ndarray:
    """uint8 RGB: the labelled saliency overlay that ``medtl predict --saliency OUT.png`` writes
    (2D: the image; 3D: the axial slice where the map peaks), with ``warning`` burned in under the labels."""
    from medtl.explain import (SALIENCY_ALPHA, display_aspect, display_slice, heatmap_overlay, labelled_overlay,
                               overlay_view)

    image, sal, index = overlay_view(scan, saliency)
    rgb = heatmap_overlay(display_slice(image.array, index, "axial"), display_slice(np.asarray(sal.array), index,
                                                                                      "axial"),
                          window=scan.default_window, alpha=SALIENCY_ALPHA)
    meta = saliency.metadata
    prob = meta.get("saliency_probability")
    where = "" if scan.is_2d else f" (axial slice {index + 1} of {image.shape[2]})"
    return labelled_overlay(rgb, method=str(meta.get("saliency_title") or "saliency") + where,
                            class_name=str(meta.get("saliency_class", "?")),
                            probability=float("nan") if prob is None else float(prob),
                            model=str(meta.get("saliency_model") or "?"), aspect=display_aspect(image, "axial"),
                            warning=warning)


# --- the objects ---------------------------------------------------------------------------------

def _algorithm(card: dict[str, Any], model_id: str) -> tuple[str, str]:
    name = str(card.get("name") or "model")[:64]
    version = f"{model_id.split('@')[-1]} (medtl {card.get('medtl_version', '?')})"[:64]
    return name, version


def build_results(sources: Sequence[Any], *, key: str, probabilities: dict[str, float], decision: str,
                  threshold: float | None, card: dict[str, Any], model_id: str, scan: Scan | None = None,
                  saliency: Scan | None = None, method: str = "", notes: str = "",
                  ood: tuple[float, float | None, bool] | None = None) -> ResultObjects:
    """SR (+ SC and fractional SEG when ``saliency`` is given) for one scored study.

    ``sources``: the study's source instances (pydicom datasets, all of one series, in order).
    ``ood``: the out-of-distribution ``(score, threshold, flagged)``; the SR carries them as
    measurements and a coded "outside the training distribution" yes/no, a flagged SC says so in the
    picture, and ``notes`` go to the SR as a comment and to the SC/SEG ``ImageComments``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not sources:
        raise MedtlError(f"{key}: no source instances to attach results to")
    first = sources[0]
    series = str(first.SeriesInstanceUID)
    name, version = _algorithm(card, model_id)
    algo = hd.sr.AlgorithmIdentification(name=name, version=version)
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=result_uid(model_id, "device"), name=name,
                                                        manufacturer_name=MANUFACTURER, model_name=version)
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    measurements = [hd.sr.Measurement(
        name=hd.sr.CodedConcept(value=f"p-{c}", scheme_designator="99MEDTL", meaning=f"Probability of {c}"[:64]),
        value=float(p), unit=hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units"),
        algorithm_id=algo) for c, p in probabilities.items()]
    if threshold is not None:
        measurements.append(hd.sr.Measurement(
            name=hd.sr.CodedConcept(value="threshold", scheme_designator="99MEDTL", meaning="Decision threshold"),
            value=float(threshold), unit=hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units"),
            algorithm_id=algo))
    evaluations = [hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=finding_code(decision))]
    if ood is not None:
        score, ood_threshold, flagged = ood
        for value, code, meaning in ((score, "ood-score", "Out-of-distribution score"),
                                     (ood_threshold, "ood-threshold", "Out-of-distribution threshold")):
            if value is not None:
                measurements.append(hd.sr.Measurement(
                    name=hd.sr.CodedConcept(value=code, scheme_designator="99MEDTL", meaning=meaning),
                    value=float(value), unit=hd.sr.CodedConcept(value="1", scheme_designator="UCUM",
                                                                meaning="no units"), algorithm_id=algo))
        concept = hd.sr.CodedConcept(value="ood", scheme_designator="99MEDTL",
                                     meaning="Outside the model's training distribution")
        evaluations.append(hd.sr.QualitativeEvaluation(name=concept, value=codes.SCT.Yes if flagged else codes.SCT.No))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=result_uid(model_id, key, "tracking"),
                                                     identifier=f"medtl {name}"[:64]),
        algorithm_id=algo, measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources[:1]])
    sc = seg = None
    number = _instance_number(sources)
    if saliency is not None and scan is not None:
        from medtl.infer.predictor import OOD_WARNING  # burned into the picture of a study flagged out of distribution

        warning = OOD_WARNING if ood is not None and ood[2] else ""
        sc = _secondary_capture(first, scan, saliency, model_id, key, series, version, number, warning)
        try:
            seg = _segmentation(sources, saliency, model_id, key, series, name, version, method, number)
        except ValueError as exc:  # highdicom refuses sources it cannot reference frame by frame; the SR and
            # the picture still go, saying why the map did not (a multi-frame source without patient geometry)
            notes = "; ".join(x for x in (notes, f"no saliency map object (SEG): {one_line(exc, typed=False)}") if x)
    if notes:  # TID 1501 takes no free text of its own: a Comment item in the group, as reporting systems show
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=notes[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=hd.sr.CodedConcept(value="363679005", scheme_designator="SCT", meaning="Imaging procedure"),
        imaging_measurements=[group])
    sr_no, sr_desc = RESULT_SERIES["sr"]
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(sources), content=report, series_instance_uid=result_uid(model_id, series, "sr"),
        series_number=sr_no, sop_instance_uid=result_uid(model_id, key, "sr"), instance_number=number,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = sr_desc
    sr.SoftwareVersions = version
    if notes:  # what the reader must know (missing slices, an out-of-distribution input ...)
        for ds in (sc, seg):
            if ds is not None:
                ds.ImageComments = notes[:10240]
    made = ResultObjects(sr=sr, sc=sc, seg=seg)
    for ds in made.datasets:
        _fit_character_set(ds)
    return made


#: Value representations whose text may go beyond ASCII (PS3.5 6.1.2.3).
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})


def _texts(ds: Any) -> Iterator[str]:
    """Every text value of ``ds``, sequence items included."""
    from pydicom.multival import MultiValue

    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _texts(item)
        elif elem.VR in _TEXT_VRS and elem.value not in (None, ""):
            yield from (str(v) for v in (elem.value if isinstance(elem.value, MultiValue) else [elem.value]))


def _fit_character_set(ds: Any) -> None:
    """Declare UTF-8 (``ISO_IR 192``) on a result whose text its Specific Character Set (copied from the
    source) cannot encode: a model, class or note beyond ASCII in the results of an ASCII source was
    written as undeclared Latin-1 bytes, or as ``?`` where Latin-1 has no such character."""
    import warnings

    from pydicom.charset import convert_encodings, encode_string

    from medtl.io.dicom.sniff import quiet_pydicom_log

    declared = ds.get("SpecificCharacterSet")
    wide = [t for t in _texts(ds) if not t.isascii()]
    if not wide or declared == "ISO_IR 192":
        return
    if declared not in (None, "", "ISO_IR 6"):  # the default repertoire is ASCII, whatever pydicom assumes
        with quiet_pydicom_log(), warnings.catch_warnings():
            warnings.simplefilter("error")  # pydicom warns, and substitutes, where it cannot encode
            try:
                for text in wide:
                    encode_string(text, convert_encodings(declared))
                return
            except (UserWarning, UnicodeError):
                pass
    ds.SpecificCharacterSet = "ISO_IR 192"


def _secondary_capture(ref: Any, scan: Scan, saliency: Scan, model_id: str, key: str, series: str,
                       version: str, number: int, warning: str = "") -> Any:
    import highdicom as hd
    from pydicom import Dataset

    rgb = np.ascontiguousarray(overlay_picture(scan, saliency, warning)[..., :3], dtype=np.uint8)
    series_number, desc = RESULT_SERIES["sc"]
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=result_uid(model_id, series, "sc"),
        series_number=series_number, sop_instance_uid=result_uid(model_id, key, "sc"), instance_number=number,
        manufacturer=MANUFACTURER, patient_orientation=("L", "P"))
    sc.SeriesDescription = desc
    sc.SoftwareVersions = version
    sc.PatientOrientation = _picture_orientation(ref, scan)
    sc.BurnedInAnnotation = "YES"  # the picture carries the method, class, probability and model
    # from_ref_dataset copies the basic patient and study attributes only: the rest of the Patient and
    # Study modules, as the SR and SEG carry them (an issuer-aware PACS files by IssuerOfPatientID), the
    # laterality of the source series (type 2C of the General Series module), and the source image
    sc.copy_patient_and_study_information(ref)
    laterality = _series_laterality(ref)
    if laterality is not None:
        sc.Laterality = laterality
    source = Dataset()
    source.ReferencedSOPClassUID = ref.SOPClassUID
    source.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    sc.SourceImageSequence = [source]
    return sc


def _picture_orientation(ref: Any, scan: Scan) -> list[str]:
    """Patient Orientation of the overlay picture: a volume's axial slice is shown in LPS (``L``, ``P``);
    a 2D picture keeps the source's pixel layout, so its orientation is the source's (from its plane
    orientation, else its own Patient Orientation: ``L``, ``F`` for a chest radiograph, not ``L``, ``P``);
    empty (unknown) when neither is known."""
    if not scan.is_2d:
        return ["L", "P"] if scan.metadata.get("orientation_known") is not False else []
    geom = _frame_geometry(ref, 0)
    if geom is not None:
        from highdicom.spatial import get_closest_patient_orientation

        row, col = geom[1][:3], geom[1][3:]
        along_row, along_col, _ = get_closest_patient_orientation(np.column_stack([row, col, np.cross(row, col)]))
        return [along_row.value, along_col.value]
    given = ref.get("PatientOrientation")
    return [str(v) for v in given] if given and len(given) == 2 else []


def _instance_number(sources: Sequence[Any]) -> int:
    """The source's InstanceNumber for the results of one instance (every slice's overlay in the result
    series then sorts as its slice does), 1 for a series."""
    if len(sources) == 1:
        try:
            return max(1, int(sources[0].get("InstanceNumber") or 1))
        except (TypeError, ValueError):
            return 1
    return 1


def _segmentation(sources: Sequence[Any], saliency: Scan, model_id: str, key: str, series: str, name: str,
                  version: str, method: str, instance_number: int) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames = frames_on_source_grid(saliency, sources)
    top = float(frames.max()) if frames.size else 0.0
    if top > 1.0:
        frames = frames / top
    frames = np.clip(np.nan_to_num(frames), 0.0, 1.0).astype(np.float32)
    kind = codes.DCM.GradientWeightedClassActivation if "cam" in method.lower() else codes.DCM.Saliency
    algo = hd.AlgorithmIdentificationSequence(name=name, family=codes.cid7162.ArtificialIntelligence,
                                              version=version, parameters={"method": method or "default"})
    label = f"saliency {method or ''} -> {saliency.metadata.get('saliency_class', '')}".strip()[:64]
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label, segmented_property_category=codes.DCM.VisualExplanation,
        segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo)
    number, desc = RESULT_SERIES["seg"]
    if len(sources) == 1 and _n_frames(sources[0]) == 1:
        pixels = frames[0]
    else:
        pixels = frames
    seg = hd.seg.Segmentation(
        source_images=list(sources), pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[description], series_instance_uid=result_uid(model_id, series, "seg"),
        series_number=number, sop_instance_uid=result_uid(model_id, key, "seg"), instance_number=instance_number,
        manufacturer=MANUFACTURER, manufacturer_model_name=name, software_versions=version,
        device_serial_number=model_id.split("@")[-1][:64] or "0", max_fractional_value=255,
        omit_empty_frames=False, content_label="SALIENCY", content_description=f"medtl {method}"[:64])
    seg.SeriesDescription = desc
    if "PatientOrientation" not in seg and _frame_geometry(sources[0], 0) is None:
        # a projection image's map has no plane orientation: the General Image module then requires
        # Patient Orientation (type 2C), which highdicom leaves out; the source's own, or empty (unknown)
        seg.PatientOrientation = sources[0].get("PatientOrientation") or ""
    return seg


def read_sources(paths: Sequence[str | os.PathLike]) -> list[Any]:
    """The source instances (pydicom datasets, pixel data included) sorted by InstanceNumber, with
    dates and times that are not valid DICOM emptied (:func:`_without_invalid_dates`) and what the
    results copy made explicit (:func:`_with_result_essentials`)."""
    import pydicom

    datasets = [_with_result_essentials(_without_invalid_dates(pydicom.dcmread(p))) for p in paths]
    return sorted(datasets, key=lambda d: (int(d.get("InstanceNumber", 0) or 0), str(d.SOPInstanceUID)))


#: Type 2 attributes of the Patient and General Study modules: every result copies them.
_PATIENT_STUDY_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName",
                        "StudyDate", "StudyTime", "StudyID", "AccessionNumber")


def _with_result_essentials(ds: Any) -> Any:
    """``ds`` with the type 2 patient and study attributes it lacks added empty (a source without a
    StudyID made every result of the study fail with a library AttributeError; empty is what DICOM
    writes for unknown), and a Specific Character Set whose empty first value (``\\ISO 2022 IR 87``,
    Japanese) spelt ``ISO 2022 IR 6``, its meaning in PS3.3 C.12.1.1.2, which highdicom refused."""
    from pydicom.multival import MultiValue

    for keyword in _PATIENT_STUDY_TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    charset = ds.get("SpecificCharacterSet")
    if isinstance(charset, MultiValue) and len(charset) > 1 and not charset[0]:
        ds.SpecificCharacterSet = ["ISO 2022 IR 6", *charset[1:]]
    return ds


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Neither pydicom's warnings nor its log lines: both quote the offending value."""
    import warnings

    from medtl.io.dicom.sniff import quiet_pydicom_log

    with quiet_pydicom_log(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _without_invalid_dates(ds: Any) -> Any:
    """``ds`` with top-level DA/DT/TM values that are not valid DICOM emptied (a PatientBirthDate written
    ``1961-03-17``, common in exports): the results copy the patient and study modules, and such a
    value made every result of the study fail to build, its text quoted in the error. A source whose
    PatientName holds several values (a backslash in the name) is refused in one line instead of a
    library TypeError."""
    from pydicom import config
    from pydicom.multival import MultiValue
    from pydicom.valuerep import validate_value

    with quiet_pydicom():  # reading a bad value warns and logs the value itself (a birth date)
        bad = []
        for elem in ds:
            if elem.VR in ("DA", "DT", "TM") and elem.value not in (None, ""):
                try:
                    validate_value(elem.VR, elem.value, config.RAISE)
                except ValueError:
                    bad.append(elem.tag)
        for tag in bad:
            ds[tag].value = ""  # empty, not removed: the patient and study modules require them (type 2)
        name = ds.get("PatientName")
    if isinstance(name, MultiValue) and len(name) > 1:
        raise MedtlError(f"the source's PatientName holds {len(name)} values (a backslash in the name?), "
                         "which DICOM allows only one of: the results cannot copy it (correct it on the PACS)")
    return ds
