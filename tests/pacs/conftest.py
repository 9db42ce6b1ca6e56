"""A real Orthanc for the PACS tests, once per session: own temp folder, free loopback ports, the
DICOMweb and GDCM plugins, medtl registered as a DICOM modality (C-FIND/C-GET/C-MOVE). The tests
skip with the reason when the ``pacs`` extra or Debian's Orthanc is not installed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests._requires import requires

requires("pynetdicom", reason="needs the pacs extra: pip install 'medtl[pacs]'")
requires("highdicom", reason="needs the pacs extra: pip install 'medtl[pacs]'")
requires("dicomweb_client", reason="needs the pacs extra: pip install 'medtl[pacs]'")

from medtl.pacs.config import PacsConfig  # noqa: E402
from medtl.pacs.orthanc import LocalOrthanc, free_port, orthanc_missing  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"
SHARED_DICOM = Path(os.environ.get("MEDTL_SHARED_DIR", REPO.parent / "shared")) / "data" / "dicom"
MEDTL_AET = "MEDTL"


def needs_orthanc() -> None:
    why = orthanc_missing()
    if why:
        pytest.skip(f"needs a local Orthanc: {why}")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """The session's Orthanc (``.listen_port``: where medtl's storage SCP listens for C-MOVE)."""
    needs_orthanc()
    listen_port = free_port()
    server = LocalOrthanc(tmp_path_factory.mktemp("orthanc"), modalities={MEDTL_AET: ("127.0.0.1", listen_port)})
    server.start()
    server.listen_port = listen_port
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def busy_dicomweb():
    """``(url, paths)``: a DICOMweb root on this machine answering every request with HTTP 503 (busy), and the
    paths it was asked for."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    paths: list[str] = []

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            paths.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/dicom-web", paths
    finally:
        server.shutdown()


@pytest.fixture
def pacs_config(orthanc) -> PacsConfig:
    return PacsConfig(url=orthanc.url, host="127.0.0.1", port=orthanc.dicom_port, called_aet=orthanc.aet,
                      calling_aet=MEDTL_AET, listen_port=orthanc.listen_port, timeout=30)


def write_config(path: Path, orthanc, user: str | None = None, password: str | None = None,
                 listen_port: int | None = None, push: str = "dicomweb") -> Path:
    lines = ["dicomweb:", f"  url: {orthanc.url}"]
    if user:
        lines.append(f"  user: {user}")
    if password:
        (path.parent / "pacs_password").write_text(password + "\n")
        os.chmod(path.parent / "pacs_password", 0o600)
        lines.append(f"  password_file: {path.parent / 'pacs_password'}")
    lines += ["dimse:", "  host: 127.0.0.1", f"  port: {orthanc.dicom_port}", f"  called_aet: {orthanc.aet}",
              f"  calling_aet: {MEDTL_AET}", f"  listen_port: {listen_port or getattr(orthanc, 'listen_port', 11113)}",
              f"push: {push}"]
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


def medtl_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def shared_dicom(name: str) -> Path:
    path = SHARED_DICOM / name
    if not path.is_file():
        pytest.skip(f"needs ../shared/data/dicom/{name} (real test material, absent here)")
    return path


def copy_files(files, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, dest / Path(f).name)
    return dest


def sr_content(ds, out=None):
    """Flatten an SR content tree into (concept meaning, value) pairs."""
    out = [] if out is None else out
    for item in ds.get("ContentSequence", []):
        name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
        if item.ValueType == "NUM":
            out.append((name, float(item.MeasuredValueSequence[0].NumericValue)))
        elif item.ValueType == "CODE":
            out.append((name, item.ConceptCodeSequence[0].CodeMeaning))
        elif item.ValueType == "TEXT":
            out.append((name, item.TextValue))
        sr_content(item, out)
    return out
