"""``medtl listen``: a study sent to medtl's storage SCP is scored once complete and its results
pushed to the PACS; SIGKILL in the middle and a restart lose nothing and do nothing twice."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from medtl.pacs.orthanc import free_port
from tests.pacs.conftest import SAMPLE, kill_group, write_config

pytestmark = pytest.mark.slow


def rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    raw = path.read_bytes()
    return list(csv.DictReader(raw[: raw.rfind(b"\n") + 1].decode().splitlines()))


def start(args, log: Path) -> subprocess.Popen:
    seen = log.stat().st_size if log.exists() else 0
    fh = open(log, "ab")  # noqa: SIM115 - the child writes it; closed with the test
    proc = subprocess.Popen([sys.executable, "-m", "medtl.cli", *args], stdout=fh, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"listener exited: {log.read_text()[-2000:]}")
        if b"listening as" in log.read_bytes()[seen:]:
            return proc
        time.sleep(0.2)
    kill_group(proc)
    raise AssertionError("listener did not start within 120 s")


def send(files, port: int) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    datasets = [pydicom.dcmread(f) for f in files]
    for sop, ts in {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets}:
        ae.add_requested_context(sop, ts)  # one context per syntax: sent as stored
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDTL")
    assert assoc.is_established
    try:
        for d in datasets:
            assert assoc.send_c_store(d).Status == 0
    finally:
        assoc.release()


def wait_for(cond, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_mid_study_and_restart_scores_and_pushes_each_study_once(orthanc, tiny_run_2d, tmp_path):
    from medtl.pacs.dicomweb import DicomWebPacs
    from medtl.pacs.config import PacsConfig

    port = free_port()
    cfg = write_config(tmp_path / "pacs.yaml", orthanc, listen_port=port)
    work = tmp_path / "work"
    args = ["listen", "--pacs-config", str(cfg), "--model", str(tiny_run_2d), "--work", str(work), "--settle", "1.5",
            "--device", "cpu"]
    series = sorted((SAMPLE / "series" / "P0042").glob("*.dcm"))[:6]
    single = [SAMPLE / "ct2d" / "P0005_1.dcm"]
    log = tmp_path / "listen.log"

    proc = start(args, log)
    try:
        send(series[:3], port)  # half the study ...
        kill_group(proc)  # ... SIGKILL before it is complete
        assert not rows(work / "scores.csv")
        proc = start(args, log)
        send(series[3:] + single, port)
        # kill again while results are being pushed (or right after, on a fast machine)
        wait_for(lambda: len(rows(work / "pushed.csv")) >= 1, 180, "a first push")
        kill_group(proc)
        proc = start(args, log)
        wait_for(lambda: len(rows(work / "studies.csv")) >= 2 and len(rows(work / "pushed.csv")) >= 7, 240,
                 "both studies done")
    finally:
        kill_group(proc, signal.SIGTERM)
    sops = {f"sop:{pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID}" for f in series + single}
    scored = [r["key"] for r in rows(work / "scores.csv")]
    pushed = [r["key"] for r in rows(work / "pushed.csv")]
    assert sorted(scored) == sorted(sops) and len(scored) == len(set(scored))
    assert sorted(pushed) == sorted(sops) and len(pushed) == len(set(pushed))
    assert not list((work / "incoming").rglob("*.dcm"))  # pushed in full: the received instances are deleted
    client = DicomWebPacs(PacsConfig(url=orthanc.url))
    study = str(pydicom.dcmread(series[0], stop_before_pixels=True).StudyInstanceUID)
    for modality, n in (("SR", 6), ("SEG", 6)):
        found = client.client.search_for_instances(study_instance_uid=study, search_filters={"Modality": modality})
        assert len(found) == n, (modality, len(found))
    text = log.read_text()
    assert "listener stopped" in text
    for f in series + single:  # patient names/IDs never reach the listener's output
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert str(ds.PatientName) not in text


def test_a_series_that_arrives_in_two_bursts_says_its_results_cover_the_first(train_tiny, tmp_path, capsys):
    """Scored on its first 10 of 32 slices (the rest came after --settle), the series said nothing."""
    import shutil

    from medtl.infer import Predictor
    from medtl.pacs.config import PacsConfig
    from medtl.pacs.listen import Listener

    from ..conftest import TINY_2D

    run = train_tiny("tiny3d_listen", *TINY_2D, "data.filter={kind: ct3d}", "preprocess.spatial_dims=3",
                     "preprocess.size=[16,16,16]", "train.epochs=1")
    files = sorted((SAMPLE / "series" / "P0041").glob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    series = tmp_path / "work" / "incoming" / first.StudyInstanceUID / first.SeriesInstanceUID
    series.mkdir(parents=True)
    listener = Listener(Predictor.from_run(run, device="cpu"), PacsConfig(host="127.0.0.1", port=11112),
                        tmp_path / "work", push=False, settle=0)
    for f in files[:10]:
        shutil.copy(f, series / f.name)
    listener.process(first.StudyInstanceUID)
    assert "WARNING" not in capsys.readouterr().out
    for f in files[10:]:
        shutil.copy(f, series / f.name)
    listener.process(first.StudyInstanceUID)
    assert f"has {len(files)} instances now but was scored on 10" in capsys.readouterr().out
    assert not list((tmp_path / "work" / "errors").glob(".*.lock"))  # no lock file left per study


def test_a_study_that_scored_cleanly_leaves_no_errors_file(tiny_run_2d, tmp_path):
    """Every study wrote ``errors/<StudyUID>.csv``, a header alone when nothing failed: a listener that runs for
    months piled up one file per study received (120 files for 120 studies in a soak, 108 of them a header alone)."""
    import shutil

    from medtl.infer import Predictor
    from medtl.pacs.config import PacsConfig
    from medtl.pacs.listen import Listener

    listener = Listener(Predictor.from_run(tiny_run_2d, device="cpu"), PacsConfig(host="127.0.0.1", port=11112),
                        tmp_path / "work", push=False, settle=0)
    good, bad = sorted((SAMPLE / "ct2d").glob("*.dcm"))[:2]
    for name, src in (("good", good), ("bad", bad)):
        folder = tmp_path / "work" / "incoming" / name / "series"
        folder.mkdir(parents=True)
        data = src.read_bytes()
        (folder / src.name).write_bytes(data if name == "good" else data[: len(data) // 2])
        listener.process(name)
    errors = tmp_path / "work" / "errors"
    assert not (errors / "good.csv").exists()
    assert len(rows(errors / "bad.csv")) == 1
    shutil.copy(good, tmp_path / "work" / "incoming" / "bad" / "series" / bad.name)  # sent again, whole
    listener.process("bad")
    assert not (errors / "bad.csv").exists()  # its failure is over: nothing left to read


def _received(work: Path, src: Path, truncate: bool = False) -> tuple[str, Path]:
    """``src`` as the listener writes what it receives (``incoming/<study>/<series>/<sop>.dcm``), under fresh UIDs
    (results already in the session's Orthanc would clash); ``truncate``: cut in half. Returns (study UID, file)."""
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = work / "incoming" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    path.parent.mkdir(parents=True)
    ds.save_as(path)
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(ds.StudyInstanceUID), path


def test_a_pushed_study_leaves_no_patient_data_behind_unless_kept(pacs_config, tiny_run_2d, tmp_path):
    """Every study received stayed in ``WORK/incoming`` for good: patient data, and a listener that runs for
    months fills its disk. Now a study done with every result pushed is deleted; ``keep_incoming`` keeps it, and
    so do a study with a failure and one scored without pushing (``medtl pacs push`` builds from its files)."""
    from medtl.infer import Predictor
    from medtl.pacs.listen import Listener
    from medtl.pacs.workflow import push_scored

    predictor = Predictor.from_run(tiny_run_2d, device="cpu")
    good, other = sorted((SAMPLE / "ct2d").glob("*.dcm"))[-2:]

    def listener(name: str, **kw) -> tuple[Listener, Path]:
        return Listener(predictor, pacs_config, tmp_path / name, settle=0, **kw), tmp_path / name

    lst, work = listener("default")
    uid, f = _received(work, good)
    bad_uid, _ = _received(work, other, truncate=True)
    lst.process(uid)
    lst.process(bad_uid)
    done = {r["study_uid"]: r for r in rows(work / "studies.csv")}
    assert done[uid]["pushed"] == "1" and not (work / "incoming" / uid).exists()
    assert done[bad_uid]["failed"] == "1" and len(list((work / "incoming" / bad_uid).rglob("*.dcm"))) == 1
    assert lst.recover() == 0  # nothing left to look at again after a restart
    lst.last_seen[uid] = 0.0  # an instance sent again while the deletion ran, and taken by it: nothing to do
    lst.step()
    assert uid not in lst.last_seen and lst.processed == 2
    failures: list = []  # results of another method need the instances: the push says why it cannot
    push_scored(predictor, pacs_config, work, method="gradcam", keys={f"sop:{f.stem}"}, failures=failures)
    assert len(failures) == 1 and "no longer in the work folder" in failures[0]["reason"] \
        and "--keep-incoming" in failures[0]["reason"]

    for name, kw in (("kept", {"keep_incoming": True}), ("unpushed", {"push": False})):
        lst, work = listener(name, **kw)
        uid, f = _received(work, good)
        lst.process(uid)
        assert f.is_file() and rows(work / "studies.csv")[0]["scored"] == "1", name
