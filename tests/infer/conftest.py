"""Tiny trained runs of the inference tests (trained once per session by ``train_tiny``) and a batch folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"
BASE = (f"data.path={SAMPLE / 'manifest.csv'}", "train.epochs=1", "eval.bootstrap=20", "data.num_workers=0")


@pytest.fixture(scope="session")
def run2d(train_tiny) -> Path:
    """ResNet-18, 2D, 32x32 px, one epoch on the sample cohort's CT slices."""
    return train_tiny("tiny2d", *BASE, "preprocess.size=[32,32]", "train.batch_size=8")


@pytest.fixture(scope="session")
def run3d(train_tiny) -> Path:
    """ResNet-18 3D, 16^3 voxels, one epoch on the sample cohort's NIfTI volumes."""
    return train_tiny("tiny3d", *BASE, "data.filter={kind: ct3d}", "preprocess.spatial_dims=3",
                      "preprocess.size=[16,16,16]", "preprocess.window=soft_tissue", "train.batch_size=4")


def make_batch_folder(root: Path) -> dict[str, list[str]]:
    """The acceptance folder: good DICOM series (one per folder, two sharing a folder), NIfTI files,
    a truncated DICOM, a text file renamed .dcm, an empty folder and a README (ignored).

    Returns ``{"good": [study paths], "bad": [paths expected in errors.csv]}``.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SAMPLE / "series" / "P0041", root / "P0041")
    shutil.copytree(SAMPLE / "series" / "P0043", root / "nested" / "P0043")
    mixed = root / "mixed"  # two series in one folder
    mixed.mkdir()
    for uid_dir, prefix in (("P0042", "a_"), ("P0044", "b_")):
        for f in (SAMPLE / "series" / uid_dir).glob("*.dcm"):
            shutil.copy(f, mixed / f"{prefix}{f.name}")
    (root / "nii").mkdir()
    for name in ("P0031.nii.gz", "P0032.nii.gz"):
        shutil.copy(SAMPLE / "ct3d" / name, root / "nii" / name)
    data = (SAMPLE / "ct2d" / "P0001_1.dcm").read_bytes()
    (root / "truncated.dcm").write_bytes(data[: len(data) // 2])
    (root / "notes.dcm").write_text("not an image, just a text file renamed .dcm\n")
    (root / "empty" / "inner").mkdir(parents=True)
    (root / "README.txt").write_text("companion file: ignored\n")
    good = [root / "P0041", root / "nested" / "P0043", mixed, mixed, root / "nii" / "P0031.nii.gz",
            root / "nii" / "P0032.nii.gz"]
    bad = [root / "truncated.dcm", root / "notes.dcm", root / "empty"]
    return {"good": [str(p) for p in good], "bad": [str(p) for p in bad]}
