"""Shared pytest fixtures. Real material lives in ../shared beside the repo; tests
that need it skip cleanly when it is absent (a fresh clone elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDTL_SHARED_DIR", REPO.parent / "shared"))

# Unit tests must never try the network or write to the user's cache.
os.environ.setdefault("MEDTL_OFFLINE", "1")


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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Point medtl's weights cache at a temp dir so tests never touch ~/.cache."""
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "medtl-cache"))
