"""End to end against a real Orthanc: upload a small hospital, pull it by DICOMweb, C-GET and C-MOVE,
score, push SR + Secondary Capture + saliency SEG into each source study, read them back."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medtl.pacs import Query
from medtl.pacs.dicomweb import DicomWebPacs
from medtl.pacs.workflow import pacs_score, pull
from tests.pacs import hospital
from tests.pacs.conftest import medtl_cli, sr_content, write_config

pytestmark = pytest.mark.slow


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def uploaded(orthanc, tmp_path_factory):
    h = hospital.build(tmp_path_factory.mktemp("hospital"))
    hospital.upload(orthanc, h["files"])
    return h


@pytest.fixture(scope="module")
def predictor(tiny_run_2d):
    from medtl.infer import Predictor

    return Predictor.from_run(tiny_run_2d, device="cpu", allow_other_domain=True)


@pytest.fixture(scope="module")
def e2e(orthanc, uploaded, predictor, tmp_path_factory):
    """One DICOMweb pull -> score -> STOW push of everything, as `medtl pacs score` does it."""
    from medtl.pacs.config import PacsConfig

    config = PacsConfig(url=orthanc.url, host="127.0.0.1", port=orthanc.dicom_port, listen_port=orthanc.listen_port)
    work = tmp_path_factory.mktemp("work-dicomweb")
    summary = pacs_score(predictor, config, Query(), work, via="dicomweb")
    return {"work": work, "summary": summary, "config": config}


def _instance(client: DicomWebPacs, study: str, sop: str):
    found = client.client.search_for_instances(study_instance_uid=study, search_filters={"SOPInstanceUID": sop})
    assert len(found) == 1, f"{sop} not found in study {study}"
    series = found[0]["0020000E"]["Value"][0]
    return client.client.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))


def test_every_image_is_scored_and_the_rest_is_one_clear_line_each(e2e, uploaded):
    s = e2e["summary"]
    scores = rows(e2e["work"] / "scores.csv")
    keys = {r["key"] for r in scores}
    assert keys == {f"sop:{u}" for u in uploaded["good"]}
    errors = rows(e2e["work"] / "errors.csv")
    by_key = {r["key"]: r for r in errors}
    for sop in uploaded["non_image"]:
        assert re.search(r"\((SR|SEG)\) holds no", by_key[f"sop:{sop}"]["reason"])  # "...(SEG) holds no image..."
    assert "decode" in by_key[f"sop:{uploaded['broken']}"]["reason"]
    assert len(errors) == 3 and s.failed == 3 and s.pushed == len(uploaded["good"]) and s.push_failed == 0


def test_results_are_in_the_source_study_with_finding_probability_and_algorithm(e2e, uploaded, predictor, orthanc):
    client = DicomWebPacs(e2e["config"])
    scores = {r["key"]: r for r in rows(e2e["work"] / "scores.csv")}
    pushed = rows(e2e["work"] / "pushed.csv")
    assert sorted(r["key"] for r in pushed) == sorted(scores)
    card = predictor.card
    for row in pushed:
        source = pydicom.dcmread(uploaded["sops"][row["key"][4:]])
        study = str(source.StudyInstanceUID)
        assert row["study_uid"] == study
        sr = _instance(client, study, row["sr_uid"])
        sc = _instance(client, study, row["sc_uid"])
        seg = _instance(client, study, row["seg_uid"])
        for obj in (sr, sc, seg):
            assert obj.StudyInstanceUID == study and obj.SeriesInstanceUID != source.SeriesInstanceUID
            assert obj.PatientID == source.PatientID and obj.Manufacturer == "medtl"
        # SR: finding, probabilities, threshold, algorithm name/version from the model card
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
        items = sr_content(sr)
        score = scores[row["key"]]
        for c in predictor.class_names:
            got = [v for k, v in items if k == f"Probability of {c}"]
            assert got and abs(got[0] - float(score[f"p_{c}"])) < 1e-6
        assert ("Finding", f"class {score['decision']}") in items
        if score["ood_score"]:  # the out-of-distribution verdict travels with the probability
            assert ("Outside the model's training distribution", "Yes" if score["ood_flag"] == "1" else "No") in items
        assert any(k == "Decision threshold" and abs(v - predictor.threshold) < 1e-6 for k, v in items)
        assert ("Algorithm Name", card["name"]) in items
        version = dict(items)["Algorithm Version"]
        assert predictor.model_id.split("@")[1] in version and card["medtl_version"] in version
        refs = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for r in se.ReferencedSOPSequence}
        assert source.SOPInstanceUID in refs
        # Secondary Capture: an RGB picture
        assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.PhotometricInterpretation == "RGB"
        assert sc.pixel_array.ndim == 3 and sc.pixel_array.shape[2] == 3
        # saliency SEG on the source grid and geometry
        assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "FRACTIONAL"
        assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
        assert int(seg.NumberOfFrames) == int(source.get("NumberOfFrames", 1))
        ref_sops = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
        assert source.SOPInstanceUID in ref_sops
        if "FrameOfReferenceUID" in source:
            assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
        if "ImagePositionPatient" in source:
            frame = seg.PerFrameFunctionalGroupsSequence[0]
            ipp = frame.PlanePositionSequence[0].ImagePositionPatient
            np.testing.assert_allclose([float(v) for v in ipp], [float(v) for v in source.ImagePositionPatient],
                                       atol=1e-3)
            shared = seg.SharedFunctionalGroupsSequence[0]
            iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
            np.testing.assert_allclose([float(v) for v in iop], [float(v) for v in source.ImageOrientationPatient],
                                       atol=1e-4)
            spacing = shared.PixelMeasuresSequence[0].PixelSpacing
            np.testing.assert_allclose([float(v) for v in spacing], [float(v) for v in source.PixelSpacing],
                                       atol=1e-6)


def test_saliency_seg_holds_the_map_on_the_source_pixels(e2e, uploaded, predictor):
    """The SEG's frame is the saliency map of the source, pixel for pixel (quantised to 1/255)."""
    from medtl.io import load_scan

    client = DicomWebPacs(e2e["config"])
    row = next(r for r in rows(e2e["work"] / "pushed.csv") if "MR2" in str(uploaded["sops"][r["key"][4:]]))
    source_path = uploaded["sops"][row["key"][4:]]
    source = pydicom.dcmread(source_path)
    seg = _instance(client, str(source.StudyInstanceUID), row["seg_uid"])
    decision = {r["key"]: r for r in rows(e2e["work"] / "scores.csv")}[row["key"]]["decision"]
    from medtl.explain import DEFAULT_METHOD  # what pacs_score uses, as `medtl pacs score` does

    sal, _ = predictor.saliency(load_scan(source_path), DEFAULT_METHOD, target=predictor.class_names.index(decision))
    expected = np.asarray(sal.array[:, :, 0], dtype=np.float64).T  # [i, j] -> rows j, columns i
    expected = expected / max(expected.max(), 1.0)
    got = seg.pixel_array.astype(np.float64) / 255.0
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1.0 / 255 + 1e-6


def test_a_second_run_scores_and_pushes_nothing_again(e2e, predictor):
    again = pacs_score(predictor, e2e["config"], Query(), e2e["work"], via="dicomweb")
    assert again.scored == 0 and again.pushed == 0 and again.pulled == 0
    assert again.skipped == e2e["summary"].scored and again.already_pushed == e2e["summary"].pushed
    keys = [r["key"] for r in rows(e2e["work"] / "pushed.csv")]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("via", ["cget", "cmove"])
def test_dimse_pulls_the_same_instances_and_scores_the_same(e2e, via, orthanc, predictor, tmp_path):
    """C-GET and C-MOVE bring the very same files (stored syntax) as WADO-RS; scores agree."""
    from medtl.infer import score

    summary = pull(e2e["config"], Query(), tmp_path / "incoming", via=via)
    assert summary.pull_failed == 0
    from pynetdicom.association import Association

    def asked(*_, **__):
        raise AssertionError("a series already here was asked for again")

    with pytest.MonkeyPatch.context() as mp:  # a re-run asks for nothing again
        mp.setattr(Association, "send_c_get", asked)
        mp.setattr(Association, "send_c_move", asked)
        again = pull(e2e["config"], Query(), tmp_path / "incoming", via=via)
    assert again.pulled == 0 and again.already_here == summary.pulled and again.pull_failed == 0
    web = {p.relative_to(e2e["work"] / "incoming"): p for p in (e2e["work"] / "incoming").rglob("*.dcm")}
    got = {p.relative_to(tmp_path / "incoming"): p for p in (tmp_path / "incoming").rglob("*.dcm")}
    assert set(got) == set(web)
    for rel, p in got.items():
        a, b = pydicom.dcmread(p), pydicom.dcmread(web[rel])
        assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID and a.get("PixelData") == b.get("PixelData")
    s = score(predictor, tmp_path / "incoming", tmp_path / "scores.csv", workers=0, progress=False,
              errors_csv=tmp_path / "errors.csv")
    ours = {r["key"]: r for r in rows(tmp_path / "scores.csv")}
    theirs = {r["key"]: r for r in rows(e2e["work"] / "scores.csv")}
    assert set(ours) == set(theirs) and s.failed == 3
    for k in ours:
        assert ours[k]["decision"] == theirs[k]["decision"]


def test_cli_find_and_pull_by_filters(orthanc, uploaded, tmp_path):
    cfg = write_config(tmp_path / "pacs.yaml", orthanc)
    out = medtl_cli("pacs", "find", "--pacs-config", str(cfg), "--modality", "MR", "--json")
    assert out.returncode == 0, out.stderr
    import json

    found = json.loads(out.stdout)
    assert {f["modality"] for f in found} == {"MR"} and len(found) >= 2  # MR2 and the broken copy
    for via in ("dicomweb", "dimse"):
        out = medtl_cli("pacs", "find", "--pacs-config", str(cfg), "--via", via, "--modality", "CT",
                        "--date-from", "2024-01-01", "--date-to", "2024-12-31", "--series-description", "*chest series")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith("1 series"), out.stdout
    out = medtl_cli("pacs", "pull", "--pacs-config", str(cfg), "--via", "cget", "--modality", "NM",
                    "--out", str(tmp_path / "nm"))
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "nm").rglob("*.dcm"))) == 1
    for value in uploaded["patient_values"]:
        if not value.isdigit():
            assert value not in out.stdout + out.stderr


def test_a_work_folder_named_relative_is_the_same_work_from_anywhere(e2e, predictor, tmp_path, monkeypatch):
    """scores.csv kept paths relative to where the first run started: a push from elsewhere found no study."""
    from medtl.pacs.workflow import push_scored

    monkeypatch.chdir(tmp_path)
    s = pacs_score(predictor, e2e["config"], Query(), Path("rel-work"), via="dicomweb", push=False)
    assert s.scored and all(Path(r["path"]).is_absolute() for r in rows(tmp_path / "rel-work" / "scores.csv"))
    monkeypatch.chdir(e2e["work"])
    pushed = push_scored(predictor, e2e["config"], tmp_path / "rel-work")
    assert pushed.push_failed == 0 and pushed.pushed == s.scored


def test_a_second_push_waits_for_the_first_and_sends_nothing_twice(e2e, predictor):
    """Two pushes on one work folder (a listener and `medtl pacs push`) each sent every result."""
    import threading
    import time

    from medtl._fileutil import hold_lock
    from medtl.pacs.workflow import push_scored

    held = hold_lock(e2e["work"] / ".pushed.csv.lock")  # a first push in progress
    got = {}
    second = threading.Thread(target=lambda: got.update(s=push_scored(predictor, e2e["config"], e2e["work"])))
    second.start()
    time.sleep(1.5)
    assert second.is_alive() and not got  # waiting for the first
    held.close()
    second.join(120)
    assert got["s"].pushed == 0 and got["s"].already_pushed == e2e["summary"].pushed


def test_an_errors_file_medtl_did_not_write_is_never_appended_to(tmp_path, capsys):
    """``medtl pacs pull --out FOLDER`` appended its failures to FOLDER/errors.csv whatever it was, cutting
    its last line first; now the folder is refused before any request (no PACS is reached here)."""
    from medtl.cli import main
    from medtl.errors import MedtlError
    from medtl.pacs.workflow import append_errors

    mine = tmp_path / "errors.csv"
    mine.write_text("my,own,notes\nrow without newline")
    before = mine.read_bytes()
    failure = {"path": "a", "key": "k", "stage": "pull", "reason": "r"}
    with pytest.raises(MedtlError, match=r"errors.csv: exists and was not written by medtl .*choose another --work$"):
        append_errors(mine, [failure])
    config = tmp_path / "pacs.yaml"
    config.write_text("dicomweb:\n  url: http://127.0.0.1:1/dicom-web\n")
    config.chmod(0o600)
    assert main(["pacs", "pull", "--out", str(tmp_path), "--pacs-config", str(config), "--modality", "CT"]) == 2
    assert "errors.csv: exists and was not written by medtl" in capsys.readouterr().err
    assert main(["pacs", "push", "--work", str(tmp_path), "--model", str(tmp_path / "no-run"),
                 "--pacs-config", str(config)]) == 2
    assert "errors.csv: exists and was not written by medtl" in capsys.readouterr().err  # before the model
    assert mine.read_bytes() == before
    ours = tmp_path / "ours" / "errors.csv"
    append_errors(ours, [failure])
    append_errors(ours, [failure])
    assert ours.read_text() == "path,key,stage,reason\na,k,pull,r\na,k,pull,r\n"
