"""medtl.pacs.query: instances written under their UIDs, atomically; a full disk is one named OSError."""

from __future__ import annotations

import errno
from pathlib import Path

import pydicom
import pytest

from medtl.pacs.query import write_instance

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def test_an_instance_the_full_disk_refused_is_enospc_naming_it_and_leaves_nothing(tmp_path, monkeypatch):
    ds = pydicom.dcmread(SAMPLE / "ct2d" / "P0001_1.dcm")

    def disk_full(self, fp, **kwargs):  # what pydicom raises: an OSError without errno, the traceback in its text
        raise OSError("With tag (7FE0,0010) got exception: [Errno 28] No space left on device\nTraceback ...")

    monkeypatch.setattr(pydicom.Dataset, "save_as", disk_full)
    with pytest.raises(OSError) as info:
        write_instance(tmp_path, ds)
    path = tmp_path / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(path))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_partial_instances_of_killed_writers_go_at_the_next_write_there(tmp_path, monkeypatch):
    """Each pull or listener killed mid-write left its ``.<SOP>.dcm.<pid>.part`` for ever (the next writer has
    another pid): verified with three SIGKILLed writers, three files left beside the instance. Now the
    first write into the folder removes those of processes that are gone, and only those."""
    import os
    import subprocess
    import sys

    import medtl.pacs.query as query

    monkeypatch.setattr(query, "_CLEARED", set(), raising=False)  # none cleared yet
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ds = pydicom.dcmread(SAMPLE / "ct2d" / "P0001_1.dcm")
    folder = tmp_path / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID)
    folder.mkdir(parents=True)
    left = folder / f".1.2.3.dcm.{dead.pid}.part"
    running = folder / f".1.2.4.dcm.{os.getppid()}.part"  # a writer still at work (this test's parent)
    mine = folder / f".1.2.5.dcm.{os.getpid()}.part"  # another thread of this process, writing now
    other = folder / ".notes.part"
    for p in (left, running, mine, other):
        p.write_bytes(b"half")
    path, written = write_instance(tmp_path, ds)
    assert written and path.parent == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted([path.name, running.name, mine.name, other.name])


def test_a_crash_while_scoring_keeps_the_pulls_failures(tmp_path, monkeypatch):
    """The pull's failed series were appended to errors.csv only once scoring returned: Ctrl-C or a crash
    in scoring lost them, so the user never learnt which series had not come."""
    import csv

    import medtl.infer
    from medtl.pacs import workflow
    from medtl.pacs.config import PacsConfig
    from medtl.pacs.query import Query

    def fake_pull(config, query, dest, via, summary, failures):
        (Path(dest) / "s.dcm").write_bytes(b"")  # something to score
        failures.append({"path": str(Path(dest) / "1.2" / "1.2.3"), "key": "series:1.2.3", "stage": "pull",
                         "reason": "the PACS sent 3 of 5 instances"})
        return summary

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "pull", fake_pull)
    monkeypatch.setattr(medtl.infer, "score", crash)
    with pytest.raises(KeyboardInterrupt):
        workflow.pacs_score(object(), PacsConfig(), Query(), tmp_path / "work", push=False)
    with open(tmp_path / "work" / "errors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["key"], r["stage"]) for r in rows] == [("series:1.2.3", "pull")]
