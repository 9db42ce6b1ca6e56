"""The result objects pushed into a source study (no PACS needed): what a reader of the SR and the
overlay is told about an input outside the model's training data."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from tests._requires import requires

from medtl.demo.cohort import sample_path
from medtl.io import Scan, load_scan

requires("highdicom")

from medtl.infer.predictor import OOD_WARNING  # noqa: E402
from medtl.pacs.results import build_results  # noqa: E402
from tests.pacs.conftest import sr_content  # noqa: E402

CARD = {"name": "tiny", "medtl_version": "0"}


def _kwargs():
    path = sample_path("ct2d")
    scan = load_scan(path)
    yy = np.linspace(0, 1, scan.shape[0], dtype=np.float32)[:, None, None] * np.ones(scan.shape, np.float32)
    sal = Scan(yy, scan.affine, metadata={"saliency_title": "Grad-CAM", "saliency_class": "1",
                                          "saliency_probability": 0.9, "saliency_model": "tiny"})
    return dict(sources=[pydicom.dcmread(path)], key="sop:1", probabilities={"0": 0.1, "1": 0.9}, decision="1",
                threshold=0.5, card=CARD, model_id="tiny@abc", scan=scan, saliency=sal, method="gradcam")


_KW = _kwargs()


def _results(ood, notes=""):
    return build_results(**_KW, notes=notes, ood=ood)


def _written(ds):
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def test_an_input_outside_the_training_data_says_so_in_the_sr_and_the_overlay():
    flagged = _results((17503.0, 42.5, True), notes="outside what this model was trained on")
    items = sr_content(_written(flagged.sr))
    assert ("Out-of-distribution score", 17503.0) in items and ("Out-of-distribution threshold", 42.5) in items
    assert ("Outside the model's training distribution", "Yes") in items
    assert ("Comment", "outside what this model was trained on") in items
    assert flagged.sc.ImageComments == "outside what this model was trained on"
    inside = _results((3.0, 42.5, False))
    assert ("Outside the model's training distribution", "No") in sr_content(_written(inside.sr))
    assert not any(name == "Comment" for name, _ in sr_content(inside.sr))
    # the warning is burned into the picture (orange text under the labels): the two pictures differ there
    a, b = flagged.sc.pixel_array, inside.sc.pixel_array
    diff = np.argwhere(np.any(a != b, axis=-1))
    assert len(diff) and diff[:, 0].max() < a.shape[0] // 3 and OOD_WARNING.startswith("OUTSIDE")
    text = a[diff[:, 0].min():diff[:, 0].max() + 1, diff[:, 1].min():diff[:, 1].max() + 1]
    assert np.any((text[..., 0] > 200) & (text[..., 1] > 100) & (text[..., 2] < 60))  # orange letters


def test_a_model_without_the_check_adds_nothing_about_it():
    items = sr_content(_results(None).sr)
    assert not any("distribution" in name for name, _ in items)


def test_results_of_another_saliency_method_are_other_objects():
    """Same UIDs for another method: the PACS kept the first map, or replaced a published object."""
    from medtl.explain import DEFAULT_METHOD
    from medtl.pacs.results import result_key

    assert result_key("sop:1", DEFAULT_METHOD) == "sop:1" and result_key("sop:1", "occlusion") == "sop:1#occlusion"
    default = _results(None)
    other = build_results(**{**_KW, "key": result_key("sop:1", "occlusion"), "method": "occlusion"})
    assert {o.SOPInstanceUID for o in default.datasets}.isdisjoint(o.SOPInstanceUID for o in other.datasets)


def test_an_invalid_birth_date_is_left_out_of_the_results_not_quoted_in_an_error(tmp_path, caplog, recwarn):
    """``1961-03-17`` (not DICOM's DA) made every result of the study fail, its value in errors.csv and
    in pydicom's warnings on stderr."""
    from medtl.pacs.results import read_sources
    from medtl.pacs.workflow import _scrub

    ds = pydicom.dcmread(sample_path("ct2d"))
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        ds.PatientBirthDate = "1961-03-17"
    ds.save_as(tmp_path / "bad_date.dcm")
    caplog.clear()
    recwarn.clear()
    source = read_sources([tmp_path / "bad_date.dcm"])[0]
    assert source.PatientBirthDate == "" and source.StudyDate
    made = build_results(**{**_KW, "sources": [source]})
    assert not made.sr.get("PatientBirthDate")
    raw = pydicom.dcmread(tmp_path / "bad_date.dcm")
    text = _scrub(f"Unable to convert '1961-03-17' for patient {raw.PatientID}", [raw])
    assert "1961-03-17" not in text and str(raw.PatientID) not in text and "<PatientBirthDate>" in text
    assert "1961" not in caplog.text and not [w for w in recwarn if "1961" in str(w.message)]


def test_a_patient_name_of_several_values_is_refused_in_one_line(tmp_path):
    from medtl.errors import MedtlError
    from medtl.pacs.results import read_sources

    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.PatientName = ["Back", "slash^Name"]
    ds.save_as(tmp_path / "two_names.dcm")
    with pytest.raises(MedtlError, match="PatientName holds 2 values"):
        read_sources([tmp_path / "two_names.dcm"])


def test_the_overlay_is_linked_to_its_source_and_files_under_the_same_patient(tmp_path):
    """The SC had no reference to its source, lacked the issuer of the patient ID the SR and SEG carry, and
    every slice's result was instance 1 of the result series."""
    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.IssuerOfPatientID = "HOSP_A"
    ds.PatientAge = "061Y"
    ds.InstanceNumber = 7
    made = build_results(**{**_KW, "sources": [ds]})
    sc = _written(made.sc)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert sc.IssuerOfPatientID == made.sr.IssuerOfPatientID == "HOSP_A" and sc.PatientAge == "061Y"
    assert sc.InstanceNumber == made.sr.InstanceNumber == made.seg.InstanceNumber == 7


def test_a_source_without_type_2_study_attributes_still_gets_results(tmp_path):
    """A source without StudyID (or birth date, sex, accession number ...) made every result of the study
    fail with highdicom's AttributeError; the results carry them empty, as DICOM writes unknown values."""
    from medtl.pacs.results import read_sources

    ds = pydicom.dcmread(sample_path("ct2d"))
    for keyword in ("StudyID", "PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(tmp_path / "no_study_id.dcm")
    made = build_results(**{**_KW, "sources": read_sources([tmp_path / "no_study_id.dcm"])})
    for obj in made.datasets:
        written = _written(obj)
        assert written.StudyID == "" and written.PatientBirthDate == "" and written.AccessionNumber == ""
        assert written.StudyInstanceUID == ds.StudyInstanceUID


def test_a_japanese_patient_name_in_iso_2022_is_copied_into_the_results(tmp_path):
    """``\\ISO 2022 IR 87`` (empty first value: the default repertoire, as Japanese sites write it) made
    highdicom refuse every result of the study."""
    from medtl.pacs.results import read_sources

    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.save_as(tmp_path / "jis.dcm")
    made = build_results(**{**_KW, "sources": read_sources([tmp_path / "jis.dcm"])})
    for obj in made.datasets:
        written = _written(obj)
        assert list(written.SpecificCharacterSet) == ["ISO 2022 IR 6", "ISO 2022 IR 87"]
        assert str(written.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"


@pytest.mark.parametrize("source_charset, expected", [(None, "ISO_IR 192"), ("ISO_IR 100", "ISO_IR 192"),
                                                      ("ISO_IR 192", "ISO_IR 192")])
def test_text_beyond_the_sources_character_set_is_written_as_declared_utf8(source_charset, expected):
    """A class, model or note beyond ASCII in the results of an ASCII source was written as undeclared
    Latin-1 bytes (``—`` as ``?``): the result declares UTF-8 and reads back as written."""
    ds = pydicom.dcmread(sample_path("ct2d"))
    if source_charset is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = source_charset
    made = build_results(**{**_KW, "sources": [ds], "probabilities": {"épanchement": 0.9, "normal": 0.1},
                            "decision": "épanchement", "card": {"name": "modèle"}, "notes": "Schicht 3 fehlt — Lücke"})
    assert _written(made.sr).SpecificCharacterSet == expected
    assert ("Comment", "Schicht 3 fehlt — Lücke") in sr_content(_written(made.sr))
    for obj in (made.sc, made.seg):
        written = _written(obj)
        assert written.SpecificCharacterSet == expected and written.ImageComments == "Schicht 3 fehlt — Lücke"


def test_a_latin1_source_keeps_its_character_set_when_it_holds_the_text():
    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Gonçalves^José"
    made = build_results(**{**_KW, "sources": [ds], "notes": "Lücke"})
    for obj in made.datasets:
        written = _written(obj)
        assert written.SpecificCharacterSet == "ISO_IR 100" and str(written.PatientName) == "Gonçalves^José"


def test_the_overlay_carries_the_patient_study_and_laterality_of_its_source():
    """The SC took a hand-picked list of the patient and study attributes (the SR and SEG carry the whole
    modules: history, reading physicians ...) and dropped the source series' Laterality (type 2C)."""
    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.AdditionalPatientHistory = "smoker"
    ds.NameOfPhysiciansReadingStudy = "Reader^Rita"
    ds.IssuerOfPatientID = "HOSP_A"
    ds.Laterality = "L"
    made = build_results(**{**_KW, "sources": [ds]})
    sc = _written(made.sc)
    assert sc.AdditionalPatientHistory == made.sr.AdditionalPatientHistory == "smoker"
    assert sc.NameOfPhysiciansReadingStudy == "Reader^Rita" and sc.IssuerOfPatientID == "HOSP_A"
    assert sc.Laterality == "L"


def _radiograph(orientation):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR: a projection image, no plane position/orientation
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "CR", "Doe^Jane", "P1", "", "F"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20240102", "1011", "", "", ""
    ds.SeriesNumber, ds.InstanceNumber, ds.ImagerPixelSpacing = 1, 1, [0.2, 0.2]
    if orientation:
        ds.PatientOrientation = orientation
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 12, 10
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(120, dtype=np.uint16).tobytes()
    return _written(ds)


@pytest.mark.parametrize("orientation", [["L", "F"], None])
def test_the_saliency_seg_of_a_radiograph_states_its_patient_orientation(orientation):
    """The SEG of a projection image (no plane orientation) lacked Patient Orientation, which its General
    Image module then requires (type 2C; dciodvfy: Missing attribute for Type 2C Conditional)."""
    ds = _radiograph(orientation)
    scan = Scan(np.zeros((10, 12, 1), np.float32), np.eye(4))
    sal = Scan(np.ones((10, 12, 1), np.float32), np.eye(4), metadata={"saliency_class": "1"})
    made = build_results(**{**_KW, "sources": [ds], "scan": scan, "saliency": sal})
    seg = _written(made.seg)
    assert "PatientOrientation" in seg and list(seg.PatientOrientation or []) == (orientation or [])


def test_classes_sharing_their_first_characters_get_distinct_codes():
    """Codes were cut to 16 characters: ``consolidation_left`` and ``consolidation_right`` were both
    ``p-consolidation_``, two measurements a receiving system could not tell apart."""
    made = build_results(**{**_KW, "probabilities": {"consolidation_left": 0.3, "consolidation_right": 0.7},
                            "decision": "consolidation_right"})

    def codes(ds):
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    yield from codes(item)
        if "CodeMeaning" in ds:
            yield ds.get("CodeValue") or ds.get("LongCodeValue"), ds.CodeMeaning

    found = dict((meaning, value) for value, meaning in codes(_written(made.sr)))
    assert found["Probability of consolidation_left"] == "p-consolidation_left"
    assert found["Probability of consolidation_right"] == "p-consolidation_right"
    assert found["class consolidation_right"] == "consolidation_right"


@pytest.mark.parametrize("orientation, iop, expected", [
    (["L", "F"], None, ["L", "F"]),  # a chest radiograph, PA: rows to the patient's left, columns to the feet
    (None, [0, 1, 0, 0, 0, -1], ["P", "F"]),  # a sagittal slice
    (None, None, []),  # unknown
])
def test_the_overlay_of_a_2d_source_states_the_sources_orientation(orientation, iop, expected):
    """The overlay keeps a 2D source's pixel layout, yet every SC said rows L, columns P (an axial slice)."""
    ds = _radiograph(orientation)
    if iop is not None:
        ds.ImageOrientationPatient, ds.ImagePositionPatient, ds.PixelSpacing = iop, [0, 0, 0], [0.5, 0.5]
    scan = Scan(np.zeros((10, 12, 1), np.float32), np.eye(4))
    sal = Scan(np.ones((10, 12, 1), np.float32), np.eye(4), metadata={"saliency_class": "1"})
    sc = _written(build_results(**{**_KW, "sources": [ds], "scan": scan, "saliency": sal}).sc)
    assert "PatientOrientation" in sc and list(sc.PatientOrientation or []) == expected


def test_the_overlay_of_an_axial_slice_is_left_and_posterior():
    assert list(_written(build_results(**_KW).sc).PatientOrientation) == ["L", "P"]


def test_a_source_highdicom_cannot_map_gets_the_report_and_picture_saying_why_there_is_no_seg(tmp_path):
    """A multi-frame source without a frame of reference made highdicom refuse the SEG, and with it every
    result of the study: not even the SR with the probabilities was pushed."""
    from medtl.pacs.results import read_sources

    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "FrameOfReferenceUID"):
        delattr(ds, keyword)
    ds.save_as(tmp_path / "multiframe.dcm")
    with pytest.warns(UserWarning, match="no patient geometry"):
        scan = load_scan(tmp_path / "multiframe.dcm")
    sal = Scan(np.full(scan.shape, 0.5, np.float32), scan.affine)
    made = build_results(**{**_KW, "sources": read_sources([tmp_path / "multiframe.dcm"]), "scan": scan,
                            "saliency": sal, "notes": "3 frames"})
    assert made.seg is None and made.sc is not None
    assert made.sc.ImageComments.startswith("3 frames; no saliency map object (SEG): ")
    assert "no saliency map object (SEG)" in str(sr_content(_written(made.sr)))



@pytest.mark.parametrize("image_laterality, expected", [("R", "R"), ("L", "L"), ("B", None), ("U", None)])
def test_the_overlay_takes_its_laterality_from_the_image_when_the_series_states_none(image_laterality, expected):
    """A radiograph stating only ImageLaterality gave an overlay without Laterality (dciodvfy: type 2C)."""
    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.ImageLaterality = image_laterality
    assert "Laterality" not in ds
    sc = _written(build_results(**{**_KW, "sources": [ds]}).sc)
    assert sc.get("Laterality") == expected


def test_institution_and_physician_names_are_blanked_from_a_push_error_line():
    """A library message quoting the hospital or a physician went into errors.csv and the listener's log
    unblanked: only patient attributes were."""
    from medtl.pacs.workflow import _scrub

    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.ReferringPhysicianName = "Doe^Anna"
    ds.PerformingPhysicianName = ["Roe^Bob", "Poe^Cy"]
    text = _scrub("cannot encode 'St Elsewhere Hospital' (Doe^Anna; Roe^Bob, Poe^Cy)", [ds])
    assert text == ("cannot encode '<InstitutionName>' (<ReferringPhysicianName>; <PerformingPhysicianName>, "
                    "<PerformingPhysicianName>)")
