"""`medtl evaluate` without --out says which data and split it used and keeps its results in the run
folder (RUN/evaluations/...), never over the training's own evaluation."""

import json
import shutil

from medtl.cli import main


def test_evaluate_without_out_says_what_and_where(tiny_run_2d, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run_2d, run)  # the session's run is shared: write into a copy
    before = (run / "predictions_test.csv").read_bytes()
    assert main(["evaluate", "--model", str(run), "--json", "data.filter.site=B"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)  # stdout stays the JSON
    folder = run / "evaluations" / "test_training-data_data.filter.site=B"
    assert (folder / "metrics.json").is_file() and (folder / "predictions_test.csv").is_file()
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["n"] == metrics["n"] and saved["evaluated_on"]["split"] == "test"
    assert saved["evaluated_on"]["overrides"] == ["data.filter.site=B"]
    assert saved["evaluated_on"]["data"].endswith("manifest.csv")
    assert "split test" in captured.err and "manifest.csv" in captured.err and f"({metrics['n']} cases" in captured.err
    assert f"results written to {folder}/" in captured.err
    assert (run / "predictions_test.csv").read_bytes() == before  # the training's evaluation is untouched


def test_evaluate_with_out_writes_there_only(tiny_run_2d, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run_2d, run)
    assert main(["evaluate", "--model", str(run), "--split", "val", "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "ev" / "metrics.json").is_file() and not (run / "evaluations").exists()
    assert "split val" in err and f"results written to {tmp_path / 'ev'}/" in err


def test_a_refused_evaluation_leaves_no_folder_behind(tiny_run_2d, tmp_path, capsys):
    """A mistyped --model used to get TYPO/evaluations/test_training-data/ made before it was refused, and
    data that could not be read an empty results folder inside the run."""
    assert main(["evaluate", "--model", str(tmp_path / "typo")]) == 2
    assert "typo: no such folder" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    run = tmp_path / "run"
    shutil.copytree(tiny_run_2d, run)
    assert main(["evaluate", "--model", str(run), "--data", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: manifest not found" in capsys.readouterr().err and not (run / "evaluations").exists()
