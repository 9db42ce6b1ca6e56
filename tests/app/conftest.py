"""Tiny trained runs (2D and 3D) on the sample cohort, and the app served once per session."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests._requires import requires

from ..conftest import REPO, TINY_2D

TINY_3D = ("data.filter={kind: ct3d}", "preprocess.spatial_dims=3", "preprocess.size=[16,16,16]", "train.epochs=1")

requires("gradio", reason="the app needs Gradio (pip install 'medtl[app]')")


@pytest.fixture(scope="session")
def run2d(tiny_run_2d) -> Path:
    """A 2D ResNet-18 trained for seconds on the sample CT slices (its card has a threshold and test metrics);
    the same run as the training tests' (trained once per session)."""
    return tiny_run_2d


@pytest.fixture(scope="session")
def run3d(train_tiny) -> Path:
    """A 3D ResNet-18 trained for one epoch on the sample CT volumes."""
    return train_tiny("tiny3d", *TINY_2D, *TINY_3D)


@pytest.fixture(scope="session")
def run3class(train_tiny, tmp_path_factory) -> Path:
    """A 2D ResNet-18 of three classes trained for seconds on the sample CT slices relabelled: ``lesion`` (label 1),
    and the others split by patient into ``normal`` and ``other`` (every class has training and validation images)."""
    src = REPO / "sample_data" / "manifest.csv"
    with open(src, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "ct2d"]
    for r in rows:
        r["path"] = str(src.parent / r["path"])
        r["label"] = "lesion" if r["label"] == "1" else ("normal" if int(r["patient_id"][1:]) % 4 == 2 else "other")
    manifest = tmp_path_factory.mktemp("three-classes") / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return train_tiny("three", f"data.path={manifest}", *TINY_2D[1:])


def serve_app(models: dict, **build_kwargs):
    """Build the app for ``models`` and serve it on a free loopback port: yields its URL, then closes it."""
    from medtl.app.app import build_app, launch

    demo = build_app(models, device="cpu", **build_kwargs)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def served(run2d, run3d):
    """The app for both runs, served on a free loopback port: yields its URL."""
    yield from serve_app({"tiny2d": run2d, "tiny3d": run3d})


@pytest.fixture
def client(served, tmp_path):
    """A fresh ``gradio_client.Client`` (its own session) downloading into ``tmp_path``."""
    gradio_client = requires("gradio_client")
    return gradio_client.Client(served, verbose=False, download_files=str(tmp_path / "downloads"))


def chromium_path() -> str | None:
    """Debian's Chromium (``.ci/run`` installs it), or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


#: Flags for headless Chromium on a closed network as root (no sandbox, no background traffic).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright (skips without either)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python (pip install playwright)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium: install Debian's package (apt-get install chromium); .ci/run does when it can")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
