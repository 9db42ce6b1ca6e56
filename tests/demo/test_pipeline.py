"""The demo run in a folder it ran in before: its own earlier scores make way, anyone else's stop it
before any training."""

import pytest

from medtl.demo.pipeline import _clear_previous_scores
from medtl.errors import MedtlError

HEADER = "path,key,model,predicted\n"


def test_scores_of_an_earlier_demo_are_removed_with_their_errors_file(tmp_path):
    (tmp_path / "scores.csv").write_text(HEADER + "a.dcm,k1,demo_domain_shift@8a316f07ebe3,1\n")
    (tmp_path / "scores.errors.csv").write_text("path,key,stage,reason\n")
    (tmp_path / "notes.txt").write_text("mine")
    _clear_previous_scores(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    _clear_previous_scores(tmp_path)  # nothing there: nothing to do


def test_scores_the_demo_did_not_write_stop_it_untouched(tmp_path):
    scores = tmp_path / "scores.csv"
    scores.write_text(HEADER + "a.dcm,k1,demo_baseline@1,0\nb.dcm,k2,chest@2,1\n")
    before = scores.read_bytes()
    with pytest.raises(MedtlError, match=r"scores.csv: holds scores the demo did not write; use another --out"):
        _clear_previous_scores(tmp_path)
    assert scores.read_bytes() == before


def test_the_demo_trains_on_its_cohort_in_a_folder_with_any_name(tmp_path, monkeypatch):
    """The cohort's path went into a ``data.path=...`` override read as YAML: ``--out "demo #1"`` trained
    on the data path ``.../demo``."""
    import medtl.train.run
    from medtl.demo.pipeline import run_demo

    seen = []

    def stop(cfg, *args, **kwargs):
        seen.append(cfg.data.path)
        raise KeyboardInterrupt  # no training: the config it was given is the point

    monkeypatch.setattr(medtl.train.run, "train", stop)
    out = tmp_path / "demo #1: site A"
    with pytest.raises(KeyboardInterrupt):
        run_demo(out, size="small", progress=False)
    assert seen == [str(out / "cohort" / "manifest.csv")]


def test_the_demo_never_replaces_a_report_or_roc_png_it_did_not_write(tmp_path, monkeypatch):
    """``medtl demo --out FOLDER`` replaced any ``roc.png`` and ``report.html`` there; now a folder holding
    someone else's is refused before any work, and the demo's own (or medtl's plot) make way."""
    import numpy as np
    from PIL import Image

    import medtl.demo.cohort
    from medtl.demo.pipeline import run_demo
    from medtl.train.plots import plot_roc

    def started(*args, **kwargs):
        raise RuntimeError("the demo started its work")

    monkeypatch.setattr(medtl.demo.cohort, "make_cohort", started)

    out = tmp_path / "mine"
    out.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out / "roc.png")
    before = (out / "roc.png").read_bytes()
    with pytest.raises(MedtlError, match=r"mine/roc.png: exists and was not written by `medtl demo`; refusing"):
        run_demo(out, size="small", progress=False)
    (out / "report.html").write_text("<html><title>my notes</title></html>\n")
    with pytest.raises(MedtlError, match=r"mine/report.html: exists and was not written by `medtl demo`; refusing"):
        run_demo(out, size="small", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "roc.png"]  # nothing written, nothing gone
    assert (out / "roc.png").read_bytes() == before
    file = tmp_path / "a_file"
    file.write_text("x")
    with pytest.raises(MedtlError, match=r"a_file: is a file, not a folder; choose another --out"):
        run_demo(file, size="small", progress=False)

    from medtl.demo.pipeline import REPORT_TITLE, _check_demo_folder

    (out / "report.html").write_text(f"<!doctype html><html><head>{REPORT_TITLE}\n</head></html>")
    _check_demo_folder(out)  # an earlier demo's report: its roc.png is the demo's too
    (out / "report.html").unlink()
    plot_roc({"a": (np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 0.6]))}, out / "roc.png")
    _check_demo_folder(out)  # medtl's own plot
