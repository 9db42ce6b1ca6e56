"""The demo report does not overstate: no point intervals at small n, each model's own threshold,
coinciding ROC curves said so, calibration failures in words, overlays said to hit or miss the lesion,
training counts, settings, learning curves and links to the run folders."""

from types import SimpleNamespace

import numpy as np
import pytest

from medtl.train.metrics import clopper_pearson
from medtl.demo.pipeline import (
    auc_text,
    calibration_words,
    epochs_text,
    identical_curves,
    p_text,
    write_report,
)


def metrics(y, p, thr):
    y, p = np.asarray(y), np.asarray(p)
    pred = p >= thr
    tn, fp = int(((y == 0) & ~pred).sum()), int(((y == 0) & pred).sum())
    fn, tp = int(((y == 1) & ~pred).sum()), int(((y == 1) & pred).sum())
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, p))
    return {"auc": auc, "n": int(y.size), "accuracy": (tn + tp) / y.size, "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp), "ece": 0.05, "threshold": thr, "confusion_matrix": [[tn, fp], [fn, tp]],
            "ci": {"auc": [auc, auc] if auc in (0.0, 1.0) else [auc - 0.1, min(1.0, auc + 0.05)],
                   "accuracy": [1.0, 1.0], "sensitivity": [1.0, 1.0], "specificity": [1.0, 1.0]}}


def newcombe_metrics(y, p, thr):
    """:func:`metrics` as medtl's cards give them now: a two-class AUC's interval is Newcombe's."""
    from medtl.train.metrics import auc_interval

    m = metrics(y, p, thr)
    m["ci"]["auc"] = list(auc_interval(m["auc"], int(np.sum(y == 1)), int(np.sum(y == 0))))
    m["bootstrap"] = {"newcombe": ["auc"]}
    return m


@pytest.fixture
def report(tmp_path):
    """The report of results as cards written before medtl gave a two-class AUC Newcombe's interval."""
    return make_report(tmp_path, metrics)


def make_report(tmp_path, metrics):
    y = np.array([0] * 20 + [1] * 20)
    perfect = np.r_[np.linspace(0.05, 0.3, 20), np.linspace(0.7, 0.95, 20)]
    shifted = np.r_[np.linspace(0.81, 0.9, 20), np.linspace(0.91, 0.99, 20)]  # every site-B case p > 0.8
    run_a, run_b = tmp_path / "runs" / "baseline", tmp_path / "runs" / "domain_shift"
    for run in (run_a, run_b):
        (run / "plots").mkdir(parents=True)
        (run / "plots" / "learning_curves.png").write_bytes(b"png")
        (run / "config.yaml").write_text("train:\n  batch_size: 16\n  lr: 0.001\n  weight_decay: 0.01\n")
    card = lambda thr: {"threshold": thr, "model": {"arch": "efficientnet-lite0", "weights": "imagenet"},  # noqa: E731
                        "training": {"epochs": 6, "epochs_run": 6, "best_epoch": 4, "monitor": "auc", "seed": 0,
                                     "strategy": "full", "augment": {"domain_shift": "none"},
                                     "data": {"counts": {"train": {"0": 60, "1": 60}, "val": {"0": 10, "1": 10}}}}}
    results = {
        "baseline": {"A": metrics(y, perfect, 0.412), "B": metrics(y, perfect, 0.412), "run_dir": run_a,
                     "card": card(0.412)},
        "domain_shift": {"A": metrics(y, perfect, 0.655), "B": metrics(y, shifted, 0.655), "run_dir": run_b,
                         "card": card(0.655)},
    }
    curves = {"baseline, site A": (y, perfect), "baseline, site B": (y, perfect),
              "domain_shift, site A": (y, perfect), "domain_shift, site B": (y, shifted)}
    roc = tmp_path / "roc.png"
    roc.write_bytes(b"png")
    (tmp_path / "overlays").mkdir()
    hit_png, miss_png = tmp_path / "overlays" / "a.png", tmp_path / "overlays" / "b.png"
    pred = SimpleNamespace(probabilities={"lesion": 0.9, "normal": 0.1}, positive_class="lesion", decision="lesion")
    overlays = [(hit_png, {"path": "ct2d/P1.dcm", "site": "A", "label": "1"}, pred, True),
                (miss_png, {"path": "ct2d/P2.dcm", "site": "B", "label": "1"}, pred, False)]
    summary = SimpleNamespace(text=lambda: "80 studies scored", out_csv=str(tmp_path / "scores.csv"),
                              errors_csv=str(tmp_path / "scores.errors.csv"))
    path = write_report(tmp_path, results, roc, overlays, summary, "ImageNet weights found", 12.0, curves=curves)
    return path.read_text()


def test_perfect_classifier_at_n40_has_no_point_interval(report):
    assert "1.000–1.000" not in report and "(1.000-1.000)" not in report
    assert "≥ 0.832†" in report  # 0.025 ** (1/20): exact bound for 20 of 20
    assert "bootstrap interval collapsed" in report
    assert "(0.912–1.000, 40/40)" in report  # Clopper–Pearson for accuracy 40/40


def test_each_model_shows_its_own_threshold(report):
    assert "no domain-shift augmentation: 0.412" in report and "domain-shift preset (strong): 0.655" in report
    assert "<td>0.412</td>" in report and "<td>0.655</td>" in report


def test_identical_roc_curves_are_said(report):
    assert "identical ROC curves" in report
    assert "<b>baseline, site A</b> and <b>baseline, site B</b>" in report


def test_calibration_failure_in_words(report):
    assert "domain-shift preset (strong), site B: the probabilities are not calibrated" in report
    assert "20 of 20 normal cases were called positive" in report and "every case got p &gt; 0.8" in report
    assert "no domain-shift augmentation, site A: the probabilities are not calibrated" not in report


def test_overlays_training_and_run_links(report):
    assert "width='460'" in report and "is on the lesion" in report and "misses the lesion" in report
    assert "pointed at the lesion in 1 of 2" in report
    assert "train 0: 60, 1: 60" in report and "lr 0.001" in report and "batch_size 16" in report
    assert "href='runs/baseline/'" in report and "runs/domain_shift/plots/learning_curves.png" in report
    assert "<code>scores.csv</code>, <code>scores.errors.csv</code>" in report  # the files score() wrote


def test_helpers():
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.187, abs=1e-3) and hi == pytest.approx(0.813, abs=1e-3)
    text, note = auc_text({"auc": 0.8, "ci": {"auc": [0.7, 0.9]}, "confusion_matrix": [[5, 5], [5, 5]]})
    assert text.startswith("0.800 <small>(0.700–0.900)") and note is None
    y = np.array([0, 0, 1, 1])
    assert identical_curves({"a": (y, np.array([.1, .2, .3, .4])), "b": (y, np.array([.2, .3, .6, .9])),
                             "c": (y, np.array([.4, .1, .3, .2]))}) == [("a", "b")]
    assert calibration_words("x", y, np.array([.1, .2, .8, .9]), 0.5, 0.05) is None
    assert [p_text(v) for v in (0.5, 0.994, 1 - 3e-9, 1.0, 2e-7, 0.0)] == ["0.50", "0.99", "1 − 3e-09", "1", "2e-07", "0"]
    # Two perfect rankings whose scores tie differently: roc_curve lists different points on the same line.
    y = np.array([0] * 5 + [1] * 5)
    tied = np.r_[np.zeros(5), np.ones(5)]
    spread = np.r_[[.1, .1, .2, .3, .3], [.6, .7, .7, .8, .9]]
    assert identical_curves({"tied": (y, tied), "spread": (y, spread)}) == [("tied", "spread")]


def test_tied_scores_are_not_given_a_perfect_bound():
    """A model that gives every case p = 1.0 has AUC 0.5 by ties and a collapsed bootstrap interval:
    said so, not the Clopper–Pearson bound of a perfect ranking."""
    y = np.array([0] * 20 + [1] * 20)
    m = metrics(y, np.ones(40), 0.99)
    m["ci"]["auc"] = [0.5, 0.5]
    text, note = auc_text(m)
    assert text.startswith("0.500 <small>(no ranking: tied scores") and "≥" not in text
    assert "same probability" in note and "bootstrap interval collapsed" not in note


def test_training_length_of_a_run_and_of_each_member_of_an_ensemble():
    single = {"epochs": 6, "epochs_run": 5, "best_epoch": 4, "monitor": "auc"}
    assert epochs_text(single) == "5/6 epochs (best 4 by auc)"
    ensemble = {"epochs": 6, "monitor": "auc", "ensemble": [{"epochs_run": 6, "best_epoch": 4},
                                                            {"epochs_run": 6, "best_epoch": 2}]}
    assert epochs_text(ensemble) == "ensemble of 2 (6/6 epochs, best 4; 6/6 epochs, best 2; by auc)"


def test_report_says_how_its_ece_and_auc_interval_are_computed(report):
    assert "ECE: top-label (the larger probability against whether that class is the true one, whatever the " \
           "threshold), 15 equal-width bins." in " ".join(report.split())
    assert "AUC: 95% CI by stratified percentile bootstrap." in report


def test_the_report_names_newcombes_interval_where_the_cards_give_it(tmp_path):
    """The demo's cards give a two-class AUC Newcombe's interval; the report still said "bootstrap"."""
    report = make_report(tmp_path, newcombe_metrics)
    assert "AUC: 95% CI by Newcombe's score interval (2006, method 5: Hanley–McNeil variance)" in report
    assert "(0.899–1.000)" in report and "bootstrap interval collapsed" not in report  # 20 + 20, ranked perfectly
