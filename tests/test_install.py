"""medtl outside its checkout: build the wheel, install it (not editable) into a fresh venv, and
run what a new user runs from an empty folder: --version, sample-data, train by recipe name,
predict, and the app answering a gradio_client call.

The fresh venv gets medtl from the wheel only; its third-party dependencies are borrowed from
the test environment through a ``.pth`` line (a plain path: the editable install's finder in
that environment is *not* activated), so the test takes seconds, not a second torch download.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _sh(args, cwd, env, timeout=600, check=True):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{args}: rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, REPO],
        cwd=out, env=os.environ.copy())
    (whl,) = out.glob("medtl-*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """``(bin folder, environment)`` of a venv holding medtl from the wheel alone."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    _sh([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent, env=os.environ.copy())
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    site = Path(_sh([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv, os.environ.copy())
                .stdout.strip())
    (site / "_medtl_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _sh([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=venv.parent, env=os.environ.copy())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    return bindir, env


def test_wheel_carries_recipes_app_and_no_checkout_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("medtl/configs/")}
    assert shipped == {p.name for p in (REPO / "medtl" / "configs").glob("*.yaml")} and "demo.yaml" in shipped
    assert {"medtl/app/app.py", "medtl/app/viewer.py", "medtl/runs.py", "medtl/demo/cohort.py"} <= set(names)
    assert not any(n.startswith(("apps/", "tests/", "benchmarks/")) for n in names)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_installed_medtl_runs_from_an_empty_folder(fresh, tmp_path):
    bindir, env = fresh
    medtl = bindir / "medtl"
    work = tmp_path / "empty"
    work.mkdir()
    where = _sh([bindir / "python", "-c", "import medtl, sys; print(medtl.__file__); "
                 "print(any('main' in p and p.endswith('main') for p in sys.path))"], work, env).stdout.split()
    assert "site-packages" in where[0] and not where[0].startswith(str(REPO / "medtl")), where
    assert _sh([medtl, "--version"], work, env).stdout.strip().startswith("medtl ")
    assert "sample_tiny" in _sh([medtl, "configs"], work, env).stdout
    _sh([medtl, "sample-data", "sample_data"], work, env)  # what README tells an installed user; the recipe's path
    _sh([medtl, "train", "--config", "sample_tiny", "--out", "run",
         "preprocess.size=[32,32]", "train.epochs=1", "eval.bootstrap=20", "data.num_workers=0"], work, env)
    assert (work / "run" / "model_card.json").is_file()
    (work / "elsewhere").mkdir()
    assert json.loads(_sh([medtl, "evaluate", "--model", "../run", "--json", "--out", "ev"], work / "elsewhere",
                          env).stdout)["n"] > 0
    dcm = sorted((work / "sample_data" / "ct2d").rglob("*.dcm"))[0]
    out = _sh([medtl, "predict", "--model", "run", dcm], work, env).stdout
    assert "decision:" in out and out.count("  p(") == 2

    port = _free_port()
    app = subprocess.Popen([str(medtl), "app", "--model", "run", "--port", str(port)], cwd=work, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from gradio_client import Client, handle_file

        deadline = time.monotonic() + 120
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "dl"))
                break
            except Exception:
                assert app.poll() is None, app.stdout.read()
                assert time.monotonic() < deadline, "the app did not answer within 120 s"
                time.sleep(1)
        api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/analyze"]
        methods = re.findall(r"'([^']+)'", api["parameters"][2]["python_type"]["type"])
        result = client.predict([handle_file(str(dcm))], "run", methods[0], 0.4, api_name="/analyze")
        label = next(r for r in result if isinstance(r, dict) and "confidences" in r)
        assert sum(c["confidence"] for c in label["confidences"]) == pytest.approx(1.0, abs=1e-6)
    finally:
        app.terminate()
        app.wait(timeout=30)


def test_checkout_entry_file_answers_help():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = _sh([sys.executable, REPO / "apps" / "medtl_app.py", "--help"], REPO, env).stdout
    assert "--model" in out and "--host" in out
