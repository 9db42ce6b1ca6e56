"""The app's "From PACS" panel against a real Orthanc: search, open a series in the viewer (the same
prediction as ``Predictor.predict`` on the file), send the result back and read the SR from the
source study; no panel without a PACS; no credential or patient identifier in the page or the log."""

from __future__ import annotations

import json
import logging
import os

import pydicom
import pytest

from tests._requires import requires
from pydicom.uid import generate_uid

from medtl.app.app import ANALYZE_OUTPUTS
from medtl.demo.cohort import sample_path
from medtl.errors import MedtlError

# The session's Orthanc (skips with the reason when the pacs extra or Debian's Orthanc is missing).
from tests.pacs.conftest import orthanc, write_config  # noqa: F401 - `orthanc` is a fixture

gradio_client = requires("gradio_client")

PATIENT_NAME, PATIENT_ID = "Pacstab^Testpatient", "PID-PACSTAB-4242"
SECRET = "not-a-real-password-7d1e"


@pytest.fixture(scope="module")
def source(orthanc, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """A sample CT slice with its own study/series/instance UIDs and patient, uploaded to Orthanc."""
    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.SeriesDescription = "pacs tab test slice"
    path = tmp_path_factory.mktemp("pacs-tab") / "slice.dcm"
    ds.save_as(path, enforce_file_format=True)
    orthanc.upload(path)
    return path


@pytest.fixture(scope="module")
def pacs_yaml(orthanc, tmp_path_factory):  # noqa: F811
    return write_config(tmp_path_factory.mktemp("pacs-cfg") / "pacs.yaml", orthanc)


@pytest.fixture(scope="module")
def served(run2d, pacs_yaml):
    """The app for the 2D run with the PACS panel, served on a free loopback port."""
    from .conftest import serve_app

    yield from serve_app({"tiny2d": run2d}, pacs_config=str(pacs_yaml))


@pytest.fixture
def client(served, tmp_path):
    return gradio_client.Client(served, verbose=False, download_files=str(tmp_path / "downloads"))


def api_names(demo) -> set[str]:
    return {d.get("api_name") for d in demo.config["dependencies"] if d.get("api_name")}


def no_pacs_anywhere(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("MEDTL_PACS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/medtl/pacs.yaml


def search(client, **filters):
    names = ["patient_id", "accession", "date_from", "date_to", "modality", "description"]
    table, picker, status = client.predict(*(filters.get(n, "") for n in names), api_name="/pacs_search")
    return table, picker, status


def test_no_panel_without_a_pacs_and_a_panel_with_one(run2d, orthanc, monkeypatch, tmp_path):  # noqa: F811
    from medtl.app.app import build_app
    from medtl.pacs import PacsConfig

    no_pacs_anywhere(monkeypatch, tmp_path)
    plain = build_app({"tiny2d": run2d}, device="cpu")
    assert not {"pacs_search", "pacs_open", "pacs_send"} & api_names(plain)
    assert "From PACS" not in json.dumps(plain.config, default=str)
    with_pacs = build_app({"tiny2d": run2d}, device="cpu", pacs_config=PacsConfig(url=orthanc.url))
    assert {"pacs_search", "pacs_open", "pacs_send"} <= api_names(with_pacs)
    assert "From PACS" in json.dumps(with_pacs.config, default=str)
    # found implicitly, as `medtl pacs` finds it
    monkeypatch.setenv("MEDTL_PACS_URL", orthanc.url)
    assert "pacs_search" in api_names(build_app({"tiny2d": run2d}, device="cpu"))
    # a file given explicitly must work
    with pytest.raises(MedtlError, match="no such PACS config"):
        build_app({"tiny2d": run2d}, device="cpu", pacs_config=str(tmp_path / "missing.yaml"))


def test_search_open_send_and_read_the_report_back(client, source, run2d, orthanc, caplog):  # noqa: F811
    from medtl.infer import Predictor
    from medtl.pacs import PacsConfig
    from medtl.pacs.dicomweb import DicomWebPacs

    caplog.set_level(logging.INFO, logger="medtl")
    src = pydicom.dcmread(source)
    study, series = str(src.StudyInstanceUID), str(src.SeriesInstanceUID)

    table, picker, status = search(client, patient_id=PATIENT_ID, modality="ct")
    rows = [dict(zip(table["headers"], r)) for r in table["data"]]
    assert [r["Series UID"] for r in rows] == [series] and rows[0]["Study UID"] == study
    assert rows[0]["Series description"] == "pacs tab test slice" and "1 image series match" in status
    assert picker["value"] == "0" and len(picker["choices"]) == 1

    out = dict(zip([*ANALYZE_OUTPUTS, "status"], client.predict("0", "tiny2d", "Grad-CAM", 0.4,
                                                                   api_name="/pacs_open")))
    assert out["error"] == "" and "Opened from the PACS" in out["status"]
    got = {c["label"]: c["confidence"] for c in out["probabilities"]["confidences"]}
    expected = Predictor.from_run(run2d, device="cpu").predict(str(source))
    assert got.keys() == expected.probabilities.keys()
    for k, p in expected.probabilities.items():
        assert got[k] == pytest.approx(p, abs=1e-6)
    assert PATIENT_ID in out["study"]  # the page shows who this is (never the log)

    sent = client.predict("Grad-CAM", api_name="/pacs_send")
    assert sent.startswith("Sent to the PACS") and study in sent
    uids = dict(line.split(": `") for line in sent.splitlines()[1:])
    sr_uid = uids["- Structured report (Comprehensive 3D SR)"].rstrip("`")
    sc_uid = uids["- Secondary Capture of the overlay"].rstrip("`")
    seg_uid = uids["- Saliency map (fractional SEG)"].rstrip("`")

    # read back from Orthanc: all three in the source study, new series, the SR with the app's probabilities
    pacs = DicomWebPacs(PacsConfig(url=orthanc.url))
    kinds = {}
    for uid in (sr_uid, sc_uid, seg_uid):
        found = pacs.client.search_for_instances(study_instance_uid=study, search_filters={"SOPInstanceUID": uid})
        assert len(found) == 1, f"{uid} not in study {study}"
        ds = pacs.client.retrieve_instance(study, found[0]["0020000E"]["Value"][0], uid,
                                           media_types=(("application/dicom", "*"),))
        assert ds.StudyInstanceUID == study and ds.SeriesInstanceUID != series and ds.PatientID == PATIENT_ID
        kinds[ds.SOPClassUID] = ds
    sr = kinds["1.2.840.10008.5.1.4.1.1.88.34"]  # Comprehensive 3D SR
    assert "1.2.840.10008.5.1.4.1.1.7" in kinds and "1.2.840.10008.5.1.4.1.1.66.4" in kinds  # SC, SEG
    from tests.pacs.conftest import sr_content

    items = sr_content(sr)
    for k, p in expected.probabilities.items():
        assert [v for name, v in items if name == f"Probability of {k}"] == [pytest.approx(p, abs=1e-6)]
    assert ("Finding", f"class {expected.decision}") in items
    predictor = Predictor.from_run(run2d, device="cpu")
    assert ("Algorithm Name", predictor.card["name"]) in items
    refs = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
            for se in s.ReferencedSeriesSequence for r in se.ReferencedSOPSequence}
    assert str(src.SOPInstanceUID) in refs

    # sending again stores nothing new
    again = client.predict("Grad-CAM", api_name="/pacs_send")
    assert again.startswith("Already sent") and sr_uid in again
    assert len(pacs.client.search_for_instances(study_instance_uid=study)) == 4

    logged = caplog.text
    assert sr_uid in logged and series in logged
    for value in (PATIENT_NAME, PATIENT_ID, "Pacstab", "Testpatient"):
        assert value not in logged


def test_send_needs_a_series_opened_from_the_pacs(client):
    with pytest.raises(gradio_client.exceptions.AppError, match="open a series from the PACS first"):
        client.predict("Grad-CAM", api_name="/pacs_send")
    client.predict([gradio_client.handle_file(str(sample_path("ct2d")))], "tiny2d", "Grad-CAM", 0.4,
                   api_name="/analyze")
    with pytest.raises(gradio_client.exceptions.AppError, match="uploaded, not opened from the PACS"):
        client.predict("Grad-CAM", api_name="/pacs_send")


def test_unreachable_pacs_is_one_line_in_the_panel(run2d):
    from medtl.app.app import MedtlApp
    from medtl.app.pacs_tab import PacsTab
    from medtl.pacs import PacsConfig
    from medtl.pacs.orthanc import free_port

    tab = PacsTab(MedtlApp({"tiny2d": run2d}, device="cpu"), PacsConfig(url=f"http://127.0.0.1:{free_port()}/dicom-web",
                                                                         timeout=5, retries=0))
    found, rows, picker, status = tab.search_page("", "", "", "", "", "")
    assert found == [] and rows == [] and status.startswith("⚠") and "cannot reach" in status
    assert "\n" not in status
    _, _, _, bad_date = tab.search_page("", "", "2024-13-45", "", "", "")
    assert "YYYY-MM-DD" in bad_date


def test_credentials_are_never_in_the_page_or_the_log(run2d, orthanc, source, pacs_yaml, tmp_path,  # noqa: F811
                                                      caplog):
    """A config with user and password (this Orthanc does not check them): the page, its API
    description and the log carry neither, and searching works."""
    from medtl.app.app import MedtlApp, build_app
    from medtl.app.pacs_tab import PacsTab
    from medtl.pacs import load_pacs_config

    caplog.set_level(logging.DEBUG, logger="medtl")
    cfg = write_config(tmp_path / "pacs.yaml", orthanc, user="medtl", password=SECRET)
    demo = build_app({"tiny2d": run2d}, device="cpu", pacs_config=str(cfg))
    page = json.dumps(demo.config, default=str)
    assert "From PACS" in page and "user and password" in page and SECRET not in page
    tab = PacsTab(MedtlApp({"tiny2d": run2d}, device="cpu"), load_pacs_config(cfg))
    found, rows, _, status = tab.search(PATIENT_ID)
    assert len(found) == 1, status
    assert SECRET not in tab.describe() + status + json.dumps(rows)
    assert SECRET not in caplog.text and PATIENT_ID not in caplog.text


def test_page_handlers_open_into_the_viewer_and_show_failures_in_the_page(run2d, orthanc, source):  # noqa: F811
    """The page's own events: the upload box is emptied, the scan and prediction fill the viewer, and a
    failure clears the previous result with the reason in the error box (as a failed upload does)."""
    from medtl.app.app import MedtlApp, Session
    from medtl.app.pacs_tab import SOURCE_DIR, PacsTab
    from medtl.pacs import PacsConfig

    def quiet(*args, **kwargs):
        return None

    tab = PacsTab(MedtlApp({"tiny2d": run2d}, device="cpu"), PacsConfig(url=orthanc.url))
    found, _, _, status = tab.search_page(PATIENT_ID, "", "", "", "", "pacs tab*")
    assert len(found) == 1, status
    out = tab.open_page(None, found, "0", "tiny2d", "Grad-CAM", 0.4, quiet)
    files, s, *rest = out
    assert files is None and isinstance(s, Session) and s.prediction is not None
    assert sorted(p.name for p in (s.outdir / SOURCE_DIR).iterdir()) == [f"{pydicom.dcmread(source).SOPInstanceUID}.dcm"]
    assert not any(p.name.startswith("pacs-") for p in tab.app.workdir.iterdir())  # nothing left behind
    outdir = s.outdir
    failed = tab.open_page(s, found, "7", "tiny2d", "Grad-CAM", 0.4, quiet)
    assert failed[1] is None and "choose one of the series found" in failed[1 + ANALYZE_OUTPUTS.index("error") + 1]
    assert not outdir.exists()  # the previous session's files went with it
    assert tab.send_page(None, "Grad-CAM").startswith("⚠")


def test_cli_app_takes_a_pacs_config():
    from medtl.cli import build_parser

    args = build_parser().parse_args(["app", "--model", "runs/x", "--pacs-config", "pacs.yaml"])
    assert args.pacs_config == "pacs.yaml"
    assert build_parser().parse_args(["app", "--model", "runs/x"]).pacs_config is None


def test_the_result_sent_explains_the_decision_whatever_class_the_page_shows(run2d, orthanc, source,  # noqa: F811
                                                                            monkeypatch):
    """The SR reports the decision, and its saliency SEG and Secondary Capture go with it: a class chosen in
    "Class the map explains" changes the page's map, not what is sent."""
    import medtl.pacs.results
    from medtl.app.app import MedtlApp
    from medtl.app.pacs_tab import PacsTab
    from medtl.pacs import PacsConfig

    def quiet(*args, **kwargs):
        return None

    tab = PacsTab(MedtlApp({"tiny2d": run2d}, device="cpu"), PacsConfig(url=orthanc.url))
    found, _, _, _ = tab.search_page(PATIENT_ID, "", "", "", "", "pacs tab*")
    s = tab.open_page(None, found, "0", "tiny2d", "Grad-CAM", 0.4, quiet)[1]
    decision = s.prediction.decision
    other = next(c for c in s.prediction.probabilities if c != decision)
    tab.app.change_target(s, other, "axial", 1, 40, 400, 0.4, "Grad-CAM", progress=quiet)
    sent = {}

    def capture(*args, **kwargs):
        sent.update(kwargs)
        raise MedtlError("captured before storing")

    monkeypatch.setattr(medtl.pacs.results, "build_results", capture)
    with pytest.raises(MedtlError, match="captured"):
        tab.send(s, "Grad-CAM")
    assert sent["decision"] == decision and sent["saliency"].metadata["saliency_class"] == decision
    assert sent["saliency"] is s.saliency["tiny2d", "gradcam", decision][1]
