"""Authentication and unreachable servers: one clear line, exit code 2, and the secret appears in no
output, log or file."""

from __future__ import annotations

import base64

import pytest

from medtl.pacs.orthanc import LocalOrthanc, free_port
from tests.pacs.conftest import MEDTL_AET, SAMPLE, medtl_cli, needs_orthanc, write_config

USER, PASSWORD = "radiology-ai", "Xq7-pacs-s3cret-2024"


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    needs_orthanc()
    server = LocalOrthanc(tmp_path_factory.mktemp("orthanc-auth"), users={USER: PASSWORD},
                          modalities={MEDTL_AET: ("127.0.0.1", free_port())})
    server.start()
    try:
        server.upload(SAMPLE / "ct2d" / "P0003_1.dcm")
        yield server
    finally:
        server.stop()


def _leaks(text: str) -> bool:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return PASSWORD in text or token in text


def test_wrong_credentials_are_one_clear_line(locked, tmp_path):
    cfg = write_config(tmp_path / "pacs.yaml", locked, user=USER, password="not-the-password")
    out = medtl_cli("pacs", "find", "--pacs-config", str(cfg), "-v")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the user and password (HTTP 401)" in lines[0], out.stderr
    out = medtl_cli("pacs", "echo", "--pacs-config", str(cfg), env={"MEDTL_PACS_PASSWORD": "", "MEDTL_PACS_USER": ""})
    assert out.returncode == 2 and "HTTP 401" in out.stderr


def test_no_credentials_refused_too(locked, tmp_path):
    cfg = write_config(tmp_path / "pacs.yaml", locked)
    out = medtl_cli("pacs", "find", "--pacs-config", str(cfg))
    assert out.returncode == 2 and "refused the credentials (none set) (HTTP 401)" in out.stderr


@pytest.mark.slow
def test_right_credentials_pull_score_and_push_without_leaking_them(locked, tiny_run_2d, tmp_path):
    cfg = write_config(tmp_path / "pacs.yaml", locked, user=USER, password=PASSWORD)
    out = medtl_cli("pacs", "find", "--pacs-config", str(cfg))
    assert out.returncode == 0 and out.stdout.strip().endswith("1 series"), out.stderr
    header, row, _ = out.stdout.strip().splitlines()
    assert header.split() == ["date", "mod", "inst", "study", "UID", "series", "UID", "description"]
    assert row.split()[1] == "CT" and len(row.split()[3]) > 10  # columns under their names
    work = tmp_path / "work"
    out = medtl_cli("pacs", "score", "--pacs-config", str(cfg), "--model", str(tiny_run_2d), "--work", str(work),
                    "--device", "cpu", "-v")
    assert out.returncode == 0, out.stderr
    assert "pushed results of 1 study" in out.stdout
    series = locked.rest("GET", "/series?expand")
    assert {s["MainDicomTags"].get("Modality") for s in series} >= {"SR", "SEG", "OT", "CT"} or len(series) == 4
    assert not _leaks(out.stdout + out.stderr)
    for f in list(work.rglob("*")) + [locked.log]:
        if f.is_file():
            assert not _leaks(f.read_bytes().decode("latin-1")), f
    # environment variables work too, and the token way is refused by Orthanc's basic auth with one line
    out = medtl_cli("pacs", "echo", "--pacs-config", str(cfg), env={"MEDTL_PACS_TOKEN": "abc.def.ghi"})
    assert out.returncode == 2 and "refused the token (HTTP 401)" in out.stderr and "abc.def.ghi" not in out.stderr


def test_unreachable_pacs_is_one_clear_line(tmp_path):
    port = free_port()  # nothing listens there
    cfg = tmp_path / "pacs.yaml"
    cfg.write_text(f"dicomweb:\n  url: http://127.0.0.1:{port}/dicom-web\n  timeout: 5\n  retries: 0\n"
                   f"dimse:\n  host: 127.0.0.1\n  port: {port}\n")
    for via in ("dicomweb", "dimse"):
        out = medtl_cli("pacs", "find", "--pacs-config", str(cfg), "--via", via)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1, out.stderr
        assert ("cannot reach" if via == "dicomweb" else "could not be reached") in lines[0]


def test_credentials_never_on_the_command_line():
    out = medtl_cli("pacs", "find", "--password", "x")
    assert out.returncode == 2 and "unrecognized arguments" in out.stderr
    out = medtl_cli("pacs", "find", env={"MEDTL_PACS_URL": "http://user:pw@127.0.0.1:1/dicom-web"})
    assert out.returncode == 2 and "must not carry user:password@" in out.stderr and "pw@" not in out.stderr
