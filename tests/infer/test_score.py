"""Batch scoring: every good study scored once, every bad one in errors.csv, resumable after a kill."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medtl.cli import main
from medtl.errors import MedtlError
from medtl.infer import ERROR_COLUMNS, Predictor, discover, score, score_columns

from .conftest import REPO, SAMPLE, make_batch_folder


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _state_and_parent(stat: Path) -> tuple[str, int] | None:
    """``(state, parent pid)`` from a ``/proc/<pid>/stat`` file (Linux), or None once the process is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(command name)", which may hold spaces
    except OSError:
        return None
    return fields[0], int(fields[1])


def _descendants(pid: int) -> set[int]:
    """Live (not zombie) processes below ``pid``: its fork server, workers, trackers."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        info = _state_and_parent(stat)
        if info and info[0] != "Z":
            children.setdefault(info[1], []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (not exited, not zombies)."""
    return {pid for pid in pids if (info := _state_and_parent(Path(f"/proc/{pid}/stat"))) and info[0] != "Z"}


def _check_acceptance(folder: Path, out: Path, expected: dict, predictor: Predictor) -> None:
    """Each good study exactly once, each bad one in errors.csv with its reason, whole lines only."""
    raw = out.read_bytes()
    assert raw.endswith(b"\n") and raw.splitlines()[0].decode().split(",") == score_columns(predictor.class_names)
    rows = _rows(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a study was scored twice"
    good = [s for s in discover(folder, 3).studies if not s.path.endswith("truncated.dcm")]
    assert sorted(keys) == sorted(s.key for s in good)
    assert sorted(r["path"] for r in rows) == sorted(expected["good"])
    for r in rows:
        p = np.array([float(r[f"p_{c}"]) for c in predictor.class_names])
        assert abs(p.sum() - 1) < 1e-6
        assert (r["predicted"], r["decision"]) == predictor.decide(p)
        assert r["model"] == predictor.model_id and r["scored_at"]
    errors = {r["path"]: r for r in _rows(out.with_name("scores.errors.csv"))}
    assert sorted(errors) == sorted(expected["bad"])
    assert "truncated" in errors[str(folder / "truncated.dcm")]["reason"]
    assert "not recognised" in errors[str(folder / "notes.dcm")]["reason"]
    assert errors[str(folder / "empty")]["reason"].startswith("empty folder")
    assert all("\n" not in r["reason"] for r in errors.values())


@pytest.fixture(scope="module")
def p3d(run3d):
    return Predictor.from_run(run3d, device="cpu")


def test_acceptance_folder_scored_once_and_failures_listed(tmp_path, run3d, p3d):
    folder = tmp_path / "in"
    expected = make_batch_folder(folder)
    out = tmp_path / "out" / "scores.csv"
    summary = score(run3d, folder, out, workers=2, batch_size=4, progress=False)
    assert (summary.scored, summary.failed, summary.skipped, summary.ignored) == (6, 3, 0, 1)
    assert summary.exit_code == 1
    _check_acceptance(folder, out, expected, p3d)
    # batch scores are the single-study predictions
    row = next(r for r in _rows(out) if r["path"].endswith("P0031.nii.gz"))
    single = p3d.predict(folder / "nii" / "P0031.nii.gz").probabilities
    for c in p3d.class_names:
        assert float(row[f"p_{c}"]) == pytest.approx(single[c], abs=1e-6)
    # a second run skips everything already scored and re-lists the failures
    again = score(run3d, folder, out, workers=0, progress=False)
    assert (again.scored, again.skipped, again.failed) == (0, 6, 3)
    _check_acceptance(folder, out, expected, p3d)


@pytest.mark.slow
def test_killed_run_resumes_with_nothing_lost_or_duplicated(tmp_path, run3d, p3d):
    folder = tmp_path / "in"
    expected = make_batch_folder(folder)
    many = folder / "many"
    many.mkdir()
    for i in range(20):  # enough studies that the kill lands mid-way
        dst = many / f"v{i:02d}.nii.gz"
        shutil.copy(SAMPLE / "ct3d" / f"P00{31 + i % 10}.nii.gz", dst)
        expected["good"].append(str(dst))
    out = tmp_path / "out" / "scores.csv"
    cmd = [sys.executable, "-m", "medtl.cli", "score", "--model", str(run3d), str(folder), "--out", str(out),
           "--batch-size", "1", "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:  # header + 2 rows
                break
            time.sleep(0.005)
        below = _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert below, "the run had no worker processes when it was killed"
    leftover_deadline = time.monotonic() + 20  # its fork server and workers notice and leave
    while _alive(below) and time.monotonic() < leftover_deadline:
        time.sleep(0.2)
    assert not _alive(below), "processes of the killed run outlived it"
    n_before = len(_rows(out))
    assert 2 <= n_before < 26
    # a kill in the middle of a write leaves a partial last line: resume must drop it
    with open(out, "ab") as fh:
        fh.write(b"series:1.2.3,/some/where,dic")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # 1: some studies (the bad ones) failed
    assert f"skipped {n_before} (already scored)" in done.stdout
    _check_acceptance(folder, out, expected, p3d)


def test_2d_folder_workers_and_dimension_errors(tmp_path, run2d):
    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted((SAMPLE / "ct2d").glob("P001[5-8]_1.dcm")):
        shutil.copy(f, folder / f.name)
    shutil.copy(next((SAMPLE / "png").glob("*.png")), folder / "xray.png")
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", folder / "volume.nii.gz")
    predictor = Predictor.from_run(run2d, device="cpu")
    a = score(predictor, folder, tmp_path / "a" / "scores.csv", workers=0, batch_size=2, progress=False)
    b = score(predictor, folder, tmp_path / "b" / "scores.csv", workers=2, batch_size=3, progress=False)
    assert (a.scored, a.failed) == (b.scored, b.failed) == (5, 1) and a.exit_code == 1
    ra = {r["key"]: r for r in _rows(tmp_path / "a" / "scores.csv")}
    rb = {r["key"]: r for r in _rows(tmp_path / "b" / "scores.csv")}
    assert ra.keys() == rb.keys()
    for k in ra:
        assert float(ra[k]["p_1"]) == pytest.approx(float(rb[k]["p_1"]), abs=1e-6)
    for f in sorted((SAMPLE / "ct2d").glob("P001[5-8]_1.dcm")):  # same numbers as the single-study path
        row = next(r for r in ra.values() if r["path"] == str(folder / f.name))
        assert float(row["p_1"]) == pytest.approx(predictor.predict(f).probabilities["1"], abs=1e-6)
    (err,) = _rows(tmp_path / "a" / "scores.errors.csv")
    assert err["path"] == str(folder / "volume.nii.gz") and err["stage"] == "load" and "2D model" in err["reason"]
    assert a.decode_seconds > 0 and a.infer_seconds > 0


def test_scores_of_another_model_are_never_mixed(tmp_path, run2d, run3d):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", folder / "a.nii.gz")
    out = tmp_path / "scores.csv"
    assert score(run3d, folder, out, workers=0, progress=False).scored == 1
    with pytest.raises(MedtlError, match="another model"):
        score(run2d, folder, out, workers=0, progress=False)
    out.write_text("foo,bar\n1,2\n")
    with pytest.raises(MedtlError, match="other columns"):
        score(run3d, folder, out, workers=0, progress=False)


def test_parquet_matches_csv(tmp_path, run3d):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow (medtl[parquet])")
    folder = tmp_path / "in"
    make_batch_folder(folder)
    out = tmp_path / "scores.csv"
    summary = score(run3d, folder, out, workers=0, parquet=True, progress=False)
    df = pd.read_parquet(summary.parquet)
    rows = _rows(out)
    assert list(df.columns) == list(rows[0]) and len(df) == len(rows) == 6
    assert list(df["key"]) == [r["key"] for r in rows]
    np.testing.assert_array_equal(df["p_1"].to_numpy(), [float(r["p_1"]) for r in rows])


def test_parquet_extra_installs_what_parquet_output_imports():
    """``pip install 'medtl[parquet]'`` is what the --parquet error tells a user to run: it must bring every
    module that output needs (pandas came only with gradio, so an install without [app] still failed)."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower() for req in extras["parquet"]}
    assert names == {"pandas", "pyarrow"}


def test_manifest_input(tmp_path, run3d):
    (tmp_path / "m.csv").write_text(f"path\n{SAMPLE / 'ct3d' / 'P0033.nii.gz'}\n{SAMPLE / 'series' / 'P0044'}\n"
                                    "nope.nii.gz\n")
    summary = score(run3d, tmp_path / "m.csv", tmp_path / "o" / "scores.csv", workers=0, progress=False)
    assert (summary.scored, summary.failed) == (2, 1)
    assert _rows(tmp_path / "o" / "scores.errors.csv")[0]["reason"] == "no such file or folder"
    assert list(_rows(tmp_path / "o" / "scores.errors.csv")[0]) == ERROR_COLUMNS


def test_cli_score_exit_codes_and_json(tmp_path, run3d, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", folder / "a.nii.gz")
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(run3d), str(folder), "--out", str(out), "--workers", "0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scored"] == 1 and summary["exit_code"] == 0 and summary["failed"] == 0
    (folder / "bad.dcm").write_text("text")
    assert main(["score", "--model", str(run3d), str(folder), "--out", str(out), "--workers", "0",
                 "--no-progress"]) == 1
    assert "scored 0, skipped 1 (already scored), failed 1" in capsys.readouterr().out
    assert main(["score", "--model", str(run3d), str(tmp_path / "missing"), "--out", str(out)]) == 2
    with pytest.raises(SystemExit) as refused:  # the parser's refusal (tests/test_cli.py has its message)
        main(["score", "--model", str(run3d), str(folder), "--out", str(out), "--batch-size", "0"])
    assert refused.value.code == 2


def test_ray_engine_without_ray_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """Without Ray, ``--engine ray`` loaded the model, wrote the CSV's header and drew the progress bar
    before failing; ``--parquet`` was already checked up front."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    out = tmp_path / "out" / "scores.csv"
    with pytest.raises(MedtlError) as refused:
        score(tmp_path / "no_run_needed", SAMPLE / "ct2d", out, engine="ray", progress=False)
    assert str(refused.value) == "--engine ray needs Ray: pip install 'medtl[ray]' (or 'ray>=2.9')"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ray_engine_gives_the_same_scores(tmp_path, run3d):
    ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install 'medtl[ray]')")
    folder = tmp_path / "in"
    make_batch_folder(folder)
    local = score(run3d, folder, tmp_path / "local" / "scores.csv", workers=0, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = score(run3d, folder, tmp_path / "ray" / "scores.csv", engine="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert (remote.scored, remote.failed) == (local.scored, local.failed) == (6, 3)
    a = {r["key"]: r for r in _rows(tmp_path / "local" / "scores.csv")}
    b = {r["key"]: r for r in _rows(tmp_path / "ray" / "scores.csv")}
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k]["p_0"], a[k]["p_1"], a[k]["decision"]) == (b[k]["p_0"], b[k]["p_1"], b[k]["decision"])
    ea = {(r["path"], r["reason"]) for r in _rows(tmp_path / "local" / "scores.errors.csv")}
    assert ea == {(r["path"], r["reason"]) for r in _rows(tmp_path / "ray" / "scores.errors.csv")}


def test_real_dicom_files_scored_or_refused_with_reasons(tmp_path, run2d, shared):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_truncated.dcm"):
        shutil.copy(get_testdata_file(name), folder / name)
    for name in ("emri_small_jpeg_2k_lossless_too_short.dcm", "liver.dcm", "RG3_J2KR.dcm"):
        shutil.copy(shared(f"data/dicom/{name}"), folder / name)
    summary = score(run2d, folder, tmp_path / "scores.csv", workers=2, batch_size=2, progress=False)
    scored = sorted(Path(r["path"]).name for r in _rows(tmp_path / "scores.csv"))
    assert scored == ["CT_small.dcm"]  # the model was trained on CT: the MR and the radiograph are refused
    reasons = {Path(r["path"]).name: r["reason"] for r in _rows(tmp_path / "scores.errors.csv")}
    assert sorted(reasons) == ["MR_small.dcm", "MR_truncated.dcm", "RG3_J2KR.dcm",
                               "emri_small_jpeg_2k_lossless_too_short.dcm", "liver.dcm"]
    assert "model trained on CT, this is MR" in reasons["MR_small.dcm"]
    assert "model trained on CT, this is X-ray" in reasons["RG3_J2KR.dcm"]
    assert "truncated" in reasons["MR_truncated.dcm"]
    assert "truncated" in reasons["emri_small_jpeg_2k_lossless_too_short.dcm"]
    assert "holds no image" in reasons["liver.dcm"]
    assert summary.exit_code == 1


def test_resume_reads_back_whole_rows_only(tmp_path):
    from medtl.infer.sinks import recover_scores as _recover_scores

    cols = score_columns(["0", "1"])
    out = tmp_path / "scores.csv"
    assert _recover_scores(out, cols, "m@1") == set() and out.read_text() == ",".join(cols) + "\n"
    whole = "k1,/a,nifti,,2x2x2,0.25,0.75,1,1,0.5,12.5,0,,m@1,2026-01-01T00:00:00+00:00\n"
    out.write_text(",".join(cols) + "\n" + whole + "k2,/b,nif")  # killed in the middle of the second row
    assert _recover_scores(out, cols, "m@1") == {"k1"}
    assert out.read_text() == ",".join(cols) + "\n" + whole
    out.write_text(",".join(cols) + "\n" + whole + "k3,/c,nifti,,2x2x2,0.5\n")  # whole line, too few fields
    assert _recover_scores(out, cols, "m@1") == {"k1"} and "k3" not in out.read_text()


def test_two_runs_never_write_one_file(tmp_path, run3d):
    from medtl.infer.sinks import lock_output as _lock

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", folder / "a.nii.gz")
    out = tmp_path / "scores.csv"
    held = _lock(out)
    try:
        with pytest.raises(MedtlError, match="another `medtl score`"):
            score(run3d, folder, out, workers=0, progress=False)
    finally:
        held.close()
    assert score(run3d, folder, out, workers=0, progress=False).scored == 1


def test_a_refused_second_run_names_the_process_holding_the_file(tmp_path):
    """The refusal names the holder's pid, so the user can find it (or see that it is their own job)."""
    from medtl.infer.sinks import lock_output as _lock

    from ..conftest import lock_held_elsewhere

    out = tmp_path / "scores.csv"
    with lock_held_elsewhere(out.with_name(f".{out.name}.lock")) as held:  # the sidecar lock_output holds
        with pytest.raises(MedtlError) as refused:
            _lock(out)
        assert str(refused.value) == (f"{out}: another `medtl score` (pid {held.pid}) is writing this file; wait "
                                      "for it or use another --out")
    _lock(out).close()  # freed by the OS when its holder was killed


def test_other_modality_goes_to_the_errors_file_and_rows_carry_the_ood_score(run2d, tmp_path):
    import pydicom

    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((SAMPLE / "ct2d").glob("*.dcm"))[:3]
    for f in good:
        (folder / f.name).write_bytes(f.read_bytes())
    ds = pydicom.dcmread(good[0])
    ds.Modality = "US"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    ds.save_as(folder / "us.dcm")
    out = tmp_path / "o" / "scores.csv"
    summary = score(run2d, folder, out, workers=0, progress=False)
    rows = _rows(out)
    assert sorted(Path(r["path"]).name for r in rows) == sorted(f.name for f in good)
    predictor = Predictor.from_run(run2d, device="cpu")
    for r in rows:
        expected = predictor.predict(r["path"])
        # rel 1e-4: the batch and the single image run float32 convolutions with other batch sizes and
        # thread splits, whose last-bit differences the inverse covariance of the score amplifies (seen:
        # 1.5e-5 in a full run on a 2-core AMD EPYC); the CSV keeps 6 significant digits
        assert float(r["ood_score"]) == pytest.approx(expected.ood_score, rel=1e-4)
        assert r["ood_flag"] == str(int(expected.out_of_distribution))
    (err,) = _rows(out.with_name("scores.errors.csv"))
    assert err["stage"] == "domain" and err["path"].endswith("us.dcm")
    assert "model trained on CT, this is ultrasound" in err["reason"] and summary.exit_code == 1
    again = tmp_path / "o2" / "scores.csv"
    score(run2d, folder, again, workers=0, progress=False, allow_other_domain=True)
    forced = {Path(r["path"]).name: r for r in _rows(again)}
    assert "override" in forced["us.dcm"]["notes"] and forced["us.dcm"]["ood_score"]


def test_a_model_that_learned_nothing_says_so_in_every_row_and_the_summary(tmp_path, run2d):
    runs = {}
    for verdict in (True, False):
        runs[verdict] = tmp_path / f"run_{verdict}"
        shutil.copytree(run2d, runs[verdict])
        card = json.loads((runs[verdict] / "model_card.json").read_text())
        card["degenerate"] = {"degenerate": verdict, "reasons": ["sd of the probabilities 7.0e-08"] * verdict}
        (runs[verdict] / "model_card.json").write_text(json.dumps(card))
    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted((SAMPLE / "ct2d").glob("P001[5-6]_1.dcm")):
        shutil.copy(f, folder / f.name)
    summary = score(runs[True], folder, tmp_path / "scores.csv", workers=0, progress=False)
    rows = _rows(tmp_path / "scores.csv")
    assert len(rows) == 2 and all("did not learn to separate the classes" in r["notes"] for r in rows)
    assert summary.text().splitlines()[-1].startswith("WARNING: this model did not learn to separate the classes")
    fine = score(runs[False], folder, tmp_path / "fine.csv", workers=0, progress=False)
    assert "WARNING" not in fine.text() and not any(r["notes"] for r in _rows(tmp_path / "fine.csv"))


def test_file_names_a_spreadsheet_would_run_are_written_as_text_and_resume_still_reads_them(tmp_path, run3d):
    """A file named ``=HYPERLINK(...)`` put a formula in scores.csv's key and path cells (CSV injection):
    such cells now start with ``'``, which spreadsheets show as text, and a re-run reads the key back."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", folder / '=HYPERLINK("http:x","y").nii.gz')
    (folder / "@SUM(1).nii.gz").write_bytes(b"not a volume")
    out = tmp_path / "scores.csv"
    first = score(run3d, folder, out, workers=0, progress=False)
    assert first.scored == 1 and first.failed == 1
    row, = _rows(out)
    assert row["key"].startswith("'=HYPERLINK(") and row["path"].startswith(str(folder))
    bad, = _rows(tmp_path / "scores.errors.csv")
    assert bad["key"] == "'@SUM(1).nii.gz"
    assert not any(v.startswith(("=", "+", "-", "@")) for r in (row, bad) for v in r.values() if v)
    again = score(run3d, folder, out, workers=0, progress=False)
    assert again.scored == 0 and again.skipped == 1 and len(_rows(out)) == 1


def test_csv_cells_round_trip():
    from medtl.infer.sinks import csv_cell, read_cell

    for text in ("=1+1", "+x", "-3", "@a", "\tx", "plain", "'quoted", "'=already", ""):
        assert read_cell(csv_cell(text)) == text
    assert csv_cell(-0.5) == -0.5 and csv_cell("=1") == "'=1" and csv_cell("plain") == "plain"


def test_scores_on_a_full_disk_raise_an_error_naming_the_csv(tmp_path, monkeypatch):
    import errno

    from medtl.infer import sinks

    out = tmp_path / "scores.csv"
    rows = sinks.CsvAppender(out, ["key", "scored_at"])
    monkeypatch.setattr(sinks.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(OSError) as info:
        rows.write([{"key": "a", "scored_at": "now"}])
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(out))
    rows.close()


def test_a_full_disk_while_writing_a_saliency_map_stops_and_the_resume_writes_it(tmp_path, monkeypatch):
    """A map the disk refused is not a study scored without its map: the row is not written, so the
    re-run once there is room scores the study again and writes its map."""
    import errno
    import importlib

    from ..conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    studies = tmp_path / "in"
    studies.mkdir()
    for name in ("P0001_1.dcm", "P0002_1.dcm"):
        shutil.copy(SAMPLE / "ct2d" / name, studies / name)
    out, maps = tmp_path / "scores.csv", tmp_path / "maps"
    score_module = importlib.import_module("medtl.infer.score")  # the module, not the function medtl.infer exports

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as m:
        m.setattr(score_module, "write_saliency", disk_full)
        with pytest.raises(OSError) as info:
            score(run, studies, out, workers=0, saliency_dir=maps, progress=False)
    assert info.value.errno == errno.ENOSPC
    assert _rows(out) == []
    summary = score(run, studies, out, workers=0, saliency_dir=maps, progress=False)
    assert (summary.scored, summary.skipped) == (2, 0)
    assert len(list(maps.glob("*.png"))) == 2
    assert not any("saliency failed" in r["notes"] for r in _rows(out))


def test_score_never_replaces_a_parquet_file_it_did_not_write_and_refuses_a_folder_as_out(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow (medtl[parquet])")
    from ..conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    studies = tmp_path / "in"
    studies.mkdir()
    shutil.copy(SAMPLE / "ct2d" / "P0001_1.dcm", studies)
    out = tmp_path / "scores.csv"
    (tmp_path / "scores.parquet").write_text("precious\n")
    with pytest.raises(MedtlError, match=r"scores.parquet: exists and is not a Parquet file of these scores' columns"):
        score(run, studies, out, workers=0, parquet=True, progress=False)
    assert (tmp_path / "scores.parquet").read_text() == "precious\n" and not out.exists()
    (tmp_path / "scores.parquet").unlink()
    for _ in range(2):  # its own Parquet file is replaced by the next run's
        assert score(run, studies, out, workers=0, parquet=True, progress=False).parquet
    with pytest.raises(MedtlError, match=rf"^{tmp_path}: is a folder; --out names the scores CSV"):
        score(run, studies, tmp_path, workers=0, progress=False)


def test_appending_after_a_row_a_kill_cut_short_never_joins_it(tmp_path):
    """The PACS ledgers (pushed.csv) are appended to across runs: the cut row must not swallow the next."""
    from medtl.infer import sinks

    out = tmp_path / "pushed.csv"
    for cut, kept in ((b"sop:B,t", b"key,pushed_at\nsop:A,t1\n"), (b"", b"key,pushed_at\nsop:A,t1\n")):
        out.write_bytes(b"key,pushed_at\nsop:A,t1\n" + cut)
        rows = sinks.CsvAppender(out, ["key", "pushed_at"])
        rows.write([{"key": "sop:B", "pushed_at": "t2"}])
        rows.close()
        assert out.read_bytes() == kept + b"sop:B,t2\n"
    out.write_bytes(b"key,pushed_at")  # cut inside the header: the file starts again with a whole one
    sinks.CsvAppender(out, ["key", "pushed_at"]).close()
    assert out.read_bytes() == b"key,pushed_at\n"


def test_dropping_a_cut_row_reads_back_in_chunks(tmp_path):
    from medtl.infer.sinks import _drop_cut_row

    out = tmp_path / "pushed.csv"
    out.write_bytes(b"key,pushed_at\nsop:A,t1\nsop:B,a-long-cut-off-value")
    _drop_cut_row(out, chunk=4)
    assert out.read_bytes() == b"key,pushed_at\nsop:A,t1\n"


def test_a_crashed_run_never_publishes_its_partial_errors_file(tmp_path, monkeypatch):
    """The errors file lists the failures of the latest run that finished: a run that crashed half way
    left its partial list in its place, as if that were all that failed."""
    import importlib

    from ..conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    studies = tmp_path / "in"
    studies.mkdir()
    shutil.copy(SAMPLE / "ct2d" / "P0001_1.dcm", studies / "good1.dcm")
    (studies / "bad1.dcm").write_text("not a scan")
    out = tmp_path / "scores.csv"
    errors = tmp_path / "scores.errors.csv"
    score(run, studies, out, workers=0, progress=False)
    first = errors.read_bytes()
    assert [r["key"] for r in _rows(errors)] == ["bad1.dcm"]
    shutil.copy(SAMPLE / "ct2d" / "P0002_1.dcm", studies / "good2.dcm")
    (studies / "bad2.dcm").write_text("not a scan either")
    score_module = importlib.import_module("medtl.infer.score")
    with monkeypatch.context() as m:
        m.setattr(score_module, "_infer", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
        with pytest.raises(RuntimeError, match="crash"):
            score(run, studies, out, workers=0, progress=False)
    assert errors.read_bytes() == first  # the finished run's list, not the crashed run's partial one
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["scores.csv", "scores.errors.csv"]
    summary = score(run, studies, out, workers=0, progress=False)
    assert (summary.scored, summary.skipped, summary.failed) == (1, 1, 2)
    assert sorted(r["key"] for r in _rows(errors)) == ["bad1.dcm", "bad2.dcm"]


def test_a_rewrite_of_the_scores_a_kill_cut_short_leaves_no_temporary_file(tmp_path):
    """Resume rewrites ``scores.csv`` through a hidden temporary file; one a kill left (a whole copy of the
    scores) stayed for ever. The next run on that file removes it, and only it: another output's stays."""
    from ..conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    studies = tmp_path / "in"
    studies.mkdir()
    shutil.copy(SAMPLE / "ct2d" / "P0001_1.dcm", studies / "a.dcm")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    left = out_dir / ".scores.csv.k1ll3d00.tmp.csv"
    other = out_dir / ".other.csv.k1ll3d00.tmp.csv"  # another --out in the same folder: its own run's
    for p in (left, other):
        p.write_text("key,path\n")
    summary = score(run, studies, out_dir / "scores.csv", workers=0, progress=False)
    assert summary.scored == 1
    assert sorted(p.name for p in out_dir.iterdir()) == [".other.csv.k1ll3d00.tmp.csv", ".scores.csv.lock",
                                                          ".scores.errors.csv.lock", "scores.csv",
                                                          "scores.errors.csv"]


def test_two_runs_given_one_errors_file_are_refused_not_merged_into_the_last_ones(tmp_path, run2d):
    """With one --errors for two runs at once, the second's errors file replaced the first's: its failures were lost."""
    from medtl._fileutil import hold_lock
    from medtl.infer.sinks import lock_output as _lock

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad.dcm").write_text("junk")
    shared = tmp_path / "shared.errors.csv"
    held = hold_lock(tmp_path / ".shared.errors.csv.lock")  # another run writing it
    try:
        with pytest.raises(MedtlError, match=r"shared.errors.csv: another `medtl score` is writing this file; wait "
                                             r"for it or use another --errors$"):
            score(run2d, folder, tmp_path / "b.csv", errors_csv=shared, workers=0, progress=False)
    finally:
        held.close()
    assert not shared.exists()
    summary = score(run2d, folder, tmp_path / "b.csv", errors_csv=shared, workers=0, progress=False)
    assert summary.failed == 1 and "bad.dcm" in shared.read_text()
    _lock(tmp_path / "b.csv").close()  # both locks were let go
    _lock(shared).close()
