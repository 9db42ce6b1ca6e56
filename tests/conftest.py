"""Shared pytest fixtures. Real material lives in ../shared beside the repo; tests
that need it skip cleanly when it is absent (a fresh clone elsewhere).

Tiny models trained on the sample cohort come from :func:`train_tiny`, once per test
session for each setting, whichever test package asks first."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDTL_SHARED_DIR", REPO.parent / "shared"))

# Unit tests must never try the network or write to the user's cache.
os.environ.setdefault("MEDTL_OFFLINE", "1")


@contextlib.contextmanager
def lock_held_by_another_thread(lock: threading.Lock) -> Iterator[None]:
    """``lock`` held by a live second thread for the duration: what a server's or a progress bar's thread
    may be doing when a child process starts (a plain fork would copy it locked, with no thread to free it)."""
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            done.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(5)
        yield
    finally:
        done.set()
        t.join()


def shared_file(rel: str) -> Path:
    """Path of ``../shared/<rel>``, or skip the test when it is not there."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"needs ../shared/{rel} (real test material, absent here)")
    return path


@pytest.fixture
def shared():
    """``shared("data/dicom/x.dcm")`` returns the path or skips the test."""
    return shared_file


def write_untrained_run(run: Path, class_names: tuple[str, ...] = ("a", "b"), spatial_dims: int = 2) -> Path:
    """A run folder of an untrained ResNet-18 (2D: 32x32 px; 3D: 16x16x16 voxels; no window) of ``class_names``:
    enough to test loading, input errors and layering without training anything."""
    from medtl.models import create
    from medtl.runs import CARD_FORMAT, save_weights, write_card
    from medtl.transforms import Preprocessing

    run.mkdir(parents=True, exist_ok=True)
    model = create("resnet18", weights=None, in_channels=1, spatial_dims=spatial_dims, num_classes=len(class_names))
    save_weights(model, run / "model.safetensors")
    prep = Preprocessing(spatial_dims=spatial_dims, size=[32, 32] if spatial_dims == 2 else [16, 16, 16],
                         window="none")
    write_card(run, {"format": CARD_FORMAT, "name": "t", "class_names": list(class_names), "model": model.card,
                     "preprocessing": prep.to_dict(), "files": {"weights": "model.safetensors"}})
    return run


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: a worker per core this process may use, four at most (each worker trains its own tiny runs
    and starts its own Orthanc and Chromium, so more workers add set-up more than speed)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 4))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Point medtl's weights cache at a temp dir so tests never touch ~/.cache."""
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "medtl-cache"))


#: The 2D tiny setting: ``sample_tiny`` at 32x32 px, two epochs, 50 bootstrap resamples (seconds on a CPU).
TINY_2D = (f"data.path={REPO / 'sample_data' / 'manifest.csv'}", "preprocess.size=[32,32]", "train.epochs=2",
           "train.batch_size=8", "eval.bootstrap=50", "data.num_workers=0")


@pytest.fixture(scope="session")
def train_tiny(tmp_path_factory) -> Callable[..., Path]:
    """``train_tiny(name, *overrides)``: a run folder called ``name`` (the app names a model after its
    folder) of the ``sample_tiny`` recipe with ``overrides``.

    Each distinct name and list of overrides is trained once per session and its folder shared by
    every test that asks for it (tests must not write into it).
    """
    from medtl.config import load_config
    from medtl.train.run import train

    runs: dict[tuple[str, tuple[str, ...]], Path] = {}

    def run(name: str, *overrides: str) -> Path:
        if (name, overrides) not in runs:
            out = tmp_path_factory.mktemp("tiny-runs") / name
            train(load_config("sample_tiny", list(overrides)), out, progress=False)
            runs[name, overrides] = out
        return runs[name, overrides]

    return run


@pytest.fixture(scope="session")
def tiny_run_2d(train_tiny) -> Path:
    """ResNet-18, 2D, 32x32 px, two epochs on the sample cohort's CT slices (:data:`TINY_2D`), in ``tiny2d/``."""
    return train_tiny("tiny2d", *TINY_2D)


@contextlib.contextmanager
def lock_held_elsewhere(lock_path: Path) -> Iterator[object]:
    """Another process holding medtl's lock (``_fileutil.hold_lock``) on ``lock_path``; killed on exit, so
    the OS frees the lock. Yields its ``Popen``."""
    import subprocess
    import sys

    held = subprocess.Popen([sys.executable, "-c", "import time; from medtl._fileutil import hold_lock; "
                             f"h = hold_lock({str(lock_path)!r}); print('held', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "held"
        yield held
    finally:
        held.kill()
        held.wait()
