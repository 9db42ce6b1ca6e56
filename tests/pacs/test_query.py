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
