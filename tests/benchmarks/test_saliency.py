"""benchmarks/saliency.py's report: the command it records, and the table of test figures."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def sal(monkeypatch):
    spec = importlib.util.spec_from_file_location("saliency_bench", ROOT / "benchmarks/saliency.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "saliency_bench", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _figures(hits: int) -> dict:
    return {"pointing": hits / 4, "hits": hits, "mass": 0.1, "mass_ratio": 2.5, "deletion": 0.8, "seconds": 0.2}


def _results(labels: list[str]) -> dict:
    groups = {key: {"n": 4, "area_share": 0.01, "methods": {label: _figures(i) for i, label in enumerate(labels)}}
              for key in ("val/A", "test/A", "test/B")}
    return {"run": "r", "kinds": ["ct2d"], "groups": groups,
            "ablation": {"n": 8, "dropped": 8, "mean_p_with": 0.9, "mean_p_without": 0.5, "cases": []}}


def test_table_gives_hits_of_n_and_the_pooled_seconds(sal):
    text = sal.table({"2d": _results(["A", "B"])}, ["A", "B"])
    assert "| B | 1/4 | 1/4 | 2.50 | 2.50 | 0.80 | 0.80 | 0.20 |" in text
    assert text.endswith("Lesion area share (a flat map's mass, ratio 1.0): 2d A 0.0100, 2d B 0.0100.")


def test_the_recorded_command_can_be_pasted_into_a_shell(sal, tmp_path, monkeypatch):
    labels = [c.label for c in sal.candidates(2)][:2]
    monkeypatch.setattr(sal.torch, "set_num_threads", lambda n: None)  # keep this process's threads as they are
    monkeypatch.setattr(sal, "evaluate", lambda run, manifest, kinds, cands, limit, ablation_dir: _results(labels))
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "manifest.csv").write_text("path\n")
    (tmp_path / "model_card.json").write_text(json.dumps({
        "metrics": {"test": {"auc": 0.9, "n": 40}}, "training": {"best_epoch": 3, "epochs_run": 6, "threads": 1}}))
    out = tmp_path / "s.json"
    argv = ["--no-3d", "--run2d", str(tmp_path), "--cohort", str(tmp_path / "cohort"), "--work", str(tmp_path),
            "--out", str(out), "--only", ";".join(labels)]
    assert sal.main(argv) == 0
    report = json.loads(out.read_text())
    assert shlex.split(report["command"])[2:] == argv
    assert report["winner"]["label"] == labels[1]  # more hits on validation
    assert report["results"]["2d"]["run_card"] == {"test_auc": 0.9, "test_n": 40, "best_epoch": 3, "epochs_run": 6,
                                                   "threads": 1, "train_seconds": None}  # a run reused, not trained
