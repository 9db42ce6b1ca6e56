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
