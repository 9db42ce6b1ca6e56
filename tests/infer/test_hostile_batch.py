"""Batch scoring with hostile input (issue 18): a stuck study, bombs, dangling links, undecodable names,
outputs inside the input, a user's own errors.csv, an unwritable output folder."""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path

import pytest

from medtl.cli import main
from medtl.errors import MedtlError
from medtl.infer import score
from medtl.infer import engines as engines_mod
from medtl.infer.sinks import ERROR_COLUMNS
from tests.io.hostile import bomb_cases

from .conftest import SAMPLE


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _nifti_folder(root: Path, n: int = 3) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        dst = root / f"v{i}.nii.gz"
        shutil.copy(SAMPLE / "ct3d" / f"P003{1 + i}.nii.gz", dst)
        out.append(dst)
    return out


_real_load = engines_mod.load_study


def _stuck_load(study, prep, keep_scan=False):
    if Path(study.path).name.startswith("stuck"):
        time.sleep(3600)  # a decode that never returns
    return _real_load(study, prep, keep_scan)


@pytest.mark.parametrize("workers", [2, 0])
def test_stuck_study_is_stopped_at_its_limit_and_the_batch_goes_on(tmp_path, run3d, monkeypatch, workers):
    folder = tmp_path / "in"
    good = _nifti_folder(folder, 3)
    shutil.copy(good[0], folder / "stuck.nii.gz")
    (folder / "zz").mkdir()
    shutil.copy(SAMPLE / "ct3d" / "P0035.nii.gz", folder / "zz" / "last.nii.gz")  # ordered after the stuck one
    monkeypatch.setattr(engines_mod, "load_study", _stuck_load)  # workers get it by name, pickled
    out = tmp_path / "out" / "scores.csv"
    t0 = time.monotonic()
    summary = score(run3d, folder, out, workers=workers, batch_size=2, progress=False, study_timeout=3)
    assert time.monotonic() - t0 < 60
    assert (summary.scored, summary.failed) == (4, 1)
    scored = sorted(Path(r["path"]).name for r in _rows(out))
    assert scored == ["last.nii.gz", "v0.nii.gz", "v1.nii.gz", "v2.nii.gz"]
    (err,) = _rows(out.with_name("scores.errors.csv"))
    assert err["path"].endswith("stuck.nii.gz") and "per-study limit of 3 s" in err["reason"]


def test_hostile_files_become_error_rows_and_good_studies_are_scored_once(tmp_path, run3d):
    folder = tmp_path / "in"
    good = _nifti_folder(folder / "good", 2)
    cases = {c.name: c for c in bomb_cases(tmp_path / "corpus", small=True)}
    for name in ("dicom_frames_2147483647", "nifti_gz_claims_1200_cubed", "nifti_gz_claims_renamed_bin",
                 "png_claims_100000_squared"):
        shutil.copy(cases[name].path, folder / f"{name}{''.join(cases[name].path.suffixes)}")
    (folder / "dangling.nii.gz").symlink_to(folder / "gone.nii.gz")
    bad_name = os.fsdecode(b"scan-\xff\xfe.nii.gz")
    shutil.copy(good[0], folder / bad_name)
    out = tmp_path / "out" / "scores.csv"
    t0 = time.monotonic()
    summary = score(run3d, folder, out, workers=2, batch_size=2, progress=False)
    assert time.monotonic() - t0 < 120
    rows = _rows(out)
    assert sorted(Path(r["path"]).name for r in rows) == ["v0.nii.gz", "v1.nii.gz"]
    assert len({r["key"] for r in rows}) == len(rows)
    errors = {Path(r["path"]).name: r["reason"] for r in _rows(out.with_name("scores.errors.csv"))}
    assert "dangling symbolic link" in errors["dangling.nii.gz"]
    assert any("not valid UTF-8" in reason for name, reason in errors.items() if "scan-" in name)
    assert "MEDTL_MAX_FRAMES" in errors["dicom_frames_2147483647.dcm"]
    assert "NIfTI header claims" in errors["nifti_gz_claims_1200_cubed.nii.gz"]
    assert "NIfTI header claims" in errors["nifti_gz_claims_renamed_bin.bin"]
    assert "MEDTL_MAX_FRAME_PIXELS" in errors["png_claims_100000_squared.png"]
    assert all("\n" not in r for r in errors.values())
    assert summary.failed == len(errors) == 6
    # the rerun resumes: nothing scored twice, the same failures listed
    again = score(run3d, folder, out, workers=0, progress=False)
    assert (again.scored, again.skipped, again.failed) == (0, 2, 6)


def test_errors_file_is_named_after_out_and_never_replaces_a_user_file(tmp_path, run3d):
    folder = tmp_path / "in"
    _nifti_folder(folder, 1)
    (folder / "junk.nii.gz").write_bytes(b"not a scan")
    outdir = tmp_path / "out"
    outdir.mkdir()
    mine = outdir / "errors.csv"
    mine.write_text("my,own,notes\n1,2,3\n")
    a = score(run3d, folder, outdir / "a.csv", workers=0, progress=False)
    b = score(run3d, folder, outdir / "b.csv", workers=0, progress=False)
    assert a.errors_csv == str(outdir / "a.errors.csv") and b.errors_csv == str(outdir / "b.errors.csv")
    assert mine.read_text() == "my,own,notes\n1,2,3\n"  # untouched
    for name in ("a.errors.csv", "b.errors.csv"):
        (row,) = _rows(outdir / name)
        assert list(row) == ERROR_COLUMNS and row["path"].endswith("junk.nii.gz")
    assert not list(outdir.glob(".*.partial"))
    # a file medtl did not write is refused, by --errors too, before anything is scored
    theirs = outdir / "c.errors.csv"
    theirs.write_text("patient,comment\n")
    with pytest.raises(MedtlError, match="was not written by medtl"):
        score(run3d, folder, outdir / "c.csv", workers=0, progress=False)
    with pytest.raises(MedtlError, match="was not written by medtl"):
        score(run3d, folder, outdir / "d.csv", workers=0, progress=False, errors_csv=mine)
    assert theirs.read_text() == "patient,comment\n" and not (outdir / "c.csv").exists()


def test_outputs_inside_the_input_folder_are_never_scored(tmp_path, run3d):
    folder = tmp_path / "in"
    _nifti_folder(folder, 2)
    out = folder / "results" / "scores.csv"
    sal = folder / "overlays"
    first = score(run3d, folder, out, workers=0, progress=False, saliency_dir=sal)
    assert (first.scored, first.failed) == (2, 0), first.failures
    assert len(list(sal.glob("*.nii.gz"))) == 2
    again = score(run3d, folder, out, workers=0, progress=False, saliency_dir=sal)
    assert (again.found, again.scored, again.skipped, again.failed) == (2, 0, 2, 0)


def test_unwritable_output_folder_is_a_one_line_refusal(tmp_path, run3d, capsys):
    folder = tmp_path / "in"
    _nifti_folder(folder, 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(MedtlError, match="cannot write there"):
        score(run3d, folder, blocker / "scores.csv", workers=0, progress=False)
    code = main(["score", "--model", str(run3d), str(folder), "--out", str(tmp_path / "ok.csv"),
                 "--saliency-dir", str(blocker / "sal"), "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write there" in err and "--saliency-dir" in err and "Traceback" not in err
    assert not (tmp_path / "ok.csv").exists()
