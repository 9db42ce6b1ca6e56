"""benchmarks/selection.py: epoch-choice rules judged on held-out validation halves (cross-fitting)."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.train.metrics import roc_auc

from ..conftest import TINY_2D
from .test_medmnist_shift import _load


@pytest.fixture()
def sel():
    return _load("selection")


def _probs(p1: np.ndarray) -> np.ndarray:
    """(epochs, images) of p(class 1) -> (epochs, images, 2)."""
    return np.stack([1 - p1, p1], axis=-1)


def test_halves_are_a_stratified_seeded_partition(sel):
    labels = np.array([0] * 7 + [1] * 4 + [2] * 5)
    a, b = sel.halves(labels, 3)
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(len(labels)))
    assert [np.sum(labels[a] == c) for c in range(3)] == [3, 2, 2]
    assert [np.sum(labels[b] == c) for c in range(3)] == [4, 2, 3]
    assert np.array_equal(sel.halves(labels, 3)[0], a) and not np.array_equal(sel.halves(labels, 4)[0], a)


def test_rules_pick_the_first_best_and_the_last(sel):
    aucs, losses = np.array([0.5, 0.9, 0.9, 0.7]), np.array([0.6, 0.3, 0.2, 0.2])
    assert [sel.pick(r, aucs, losses) for r in sel.RULES] == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown rule"):
        sel.pick("median", aucs, losses)


def test_scores_are_the_auc_and_cross_entropy_of_each_epoch(sel):
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    probs = _probs(rng.uniform(0.01, 0.99, (3, 40)))
    aucs, losses = sel.scores(labels, probs)
    assert aucs.tolist() == [roc_auc_score(labels, p[:, 1]) for p in probs]
    assert losses == pytest.approx([log_loss(labels, p) for p in probs], rel=1e-12)


def test_cross_fitting_removes_the_optimism_of_choosing_on_the_scored_images(sel):
    """30 epochs of pure noise on 40 images (8 draws): the best AUC on all images is well above chance,
    the best chosen on one half and scored on the other is at chance; a perfect epoch is found, scoring 1."""
    labels = np.repeat([0, 1], 20)
    in_sample, fitted = [], []
    for seed in range(8):
        noise = _probs(np.random.default_rng(seed).uniform(size=(30, 40)))
        in_sample.append(sel.scores(labels, noise)[0].max())
        fitted.append(sel.cross_fitted(labels, noise, splits=5)["auc"])
    assert np.mean(in_sample) > 0.65 and abs(np.mean(fitted) - 0.5) < 0.05
    perfect = noise.copy()
    perfect[17] = _probs(0.2 + 0.6 * labels)
    assert sel.cross_fitted(labels, perfect, splits=5)["auc"] == 1.0
    assert sel.cross_fitted(labels, perfect, splits=5)["loss"] == 1.0


def test_last_rule_is_the_mean_half_auc_of_the_last_epoch(sel):
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 30)
    probs = _probs(np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.3, (4, 60)), 0.001, 0.999))
    expected = np.mean([roc_auc(labels[h], probs[-1][h]) for k in range(5) for h in sel.halves(labels, k)])
    assert sel.cross_fitted(labels, probs, splits=5)["last"] == pytest.approx(expected, abs=1e-12)


def _run(ds: str, seed: int, auc: float, loss: float, last: float, gap: float = 0.0, weights: str = "imagenet"):
    return {"dataset": ds, "seed": seed, "weights": weights, "rescore_gap": gap,
            "cross_fitted": {"auc": auc, "loss": loss, "last": last}}


@pytest.mark.parametrize("p500, retina, kept", [
    ((0.990, 0.991, 0.980), (0.80, 0.81, 0.79), "loss"),   # loss higher on both
    ((0.990, 0.991, 0.995), (0.80, 0.81, 0.79), "loss"),   # last higher on one only
    ((0.990, 0.989, 0.995), (0.80, 0.81, 0.82), "last"),   # last on both, loss on one
    ((0.990, 0.992, 0.995), (0.80, 0.801, 0.83), "last"),  # both on both: the larger smaller gain
    ((0.990, 0.990, 0.989), (0.80, 0.80, 0.79), "auc"),    # a tie is not higher
])
def test_verdict_keeps_a_rule_only_when_higher_on_both_datasets(sel, p500, retina, kept):
    runs = [_run("pneumoniamnist", s, *p500) for s in (0, 1, 2)] + [_run("retinamnist", s, *retina) for s in (0, 1, 2)]
    runs.append(_run("pneumoniamnist", 0, 0.5, 0.9, 0.9, weights="scratch"))  # reported, never judged
    v = sel.verdict(runs)
    assert v["complete"] and v["kept"] == kept


def test_verdict_waits_for_every_seed_and_leaves_out_a_run_that_does_not_rescore(sel):
    runs = [_run(ds, s, 0.9, 0.95, 0.9) for ds in ("pneumoniamnist", "retinamnist") for s in (0, 1, 2)]
    assert sel.verdict(runs[:-1]) == {"means": {"pneumoniamnist": pytest.approx({"auc": 0.9, "loss": 0.95,
                                                                               "last": 0.9})},
                                      "kept": None, "complete": False}
    runs[-1]["rescore_gap"] = 1e-3
    assert not sel.verdict(runs)["complete"]


def test_kept_epochs_rescored_repeat_training_validation(sel, train_tiny):
    """The rule's check on a real run: every epoch ``train.keep_epochs`` kept, scored again on the validation
    split, gives the AUC its ``metrics.csv`` row recorded."""
    from medtl.train.logger import read_history

    run = train_tiny("tiny2d_epochs", *TINY_2D, "train.keep_epochs=true", "train.epochs=3")
    labels, probs = sel.epoch_val_probs(run)
    assert probs.shape[0] == 3 and probs.shape[1] == len(labels)
    recorded = [r["val_auc"] for r in read_history(run / "metrics.csv")]
    assert sel.scores(labels, probs)[0] == pytest.approx(recorded, abs=1e-9)
    assert len(set(recorded)) > 1  # the epochs differ, so a wrong epoch file would show


def test_docs_sentence_gives_each_rules_figures_the_verdict_and_test_only_as_report(tmp_path, sel):
    from .test_medmnist_shift import _load as load

    mm = load("medmnist")

    def run(ds, w, seed, cf, test):
        return {"name": f"{ds}_{w}_s{seed}_epochs", "dataset": ds, "weights": w, "seed": seed, "rescore_gap": 0.0,
                "cross_fitted": dict(zip(sel.RULES, cf)),
                "figures": {rule: {"test_auc": t} for rule, t in zip(sel.RULES, test)}}

    runs = [run(ds, "imagenet", s, (0.99, 0.991 + s / 1000, 0.98), (0.96 + s / 100, 0.97, 0.95))
            for ds in ("pneumoniamnist", "retinamnist") for s in (0, 1, 2)]
    runs.append(run("pneumoniamnist", "scratch", 0, (0.9, 0.9, 0.9), (0.955, 0.956, 0.957)))
    path = tmp_path / "sel.json"
    path.write_text(__import__("json").dumps({"splits": 50, "rescore_tol": sel.RESCORE_TOL, "runs": runs,
                                             "verdict": sel.verdict(runs)}))
    text = mm.selection_sentence(path)
    assert ("500 PneumoniaMNIST images: the best validation AUC (the recipe) 0.9900, the lowest validation loss "
            "0.9920") in text
    assert "Higher on both datasets: the lowest validation loss (to be confirmed on seeds 3-5" in text
    assert "500 PneumoniaMNIST images, imagenet (seeds 0, 1 and 2): the best validation AUC 0.970 ± 0.010" in text
    assert ("500 PneumoniaMNIST images, scratch (seed 0): the best validation AUC 0.955, the lowest validation "
            "loss 0.956") in text
    assert "Left out" not in text
    assert mm.selection_sentence(tmp_path / "absent.json") == ""


def test_evaluate_run_checks_the_epochs_and_scores_each_rules_pick(sel, train_tiny):
    """A whole run through the probe: the re-scoring check passes, the best-AUC pick on all of validation is the
    epoch training kept (its figures taken from the run's row), the other picks evaluated with the views."""
    import json

    run = train_tiny("tiny2d_epochs", *TINY_2D, "train.keep_epochs=true", "train.epochs=3")
    card = json.loads((run / "model_card.json").read_text())
    row = {"name": "tiny_epochs", "dataset": "sample", "weights": "imagenet", "seed": 0, "train_size": None,
           "best_epoch": card["training"]["best_epoch"], "val_auc": -1.0, "test_auc": -1.0, "test_accuracy": -1.0,
           "run_dir": str(run)}
    r = sel.evaluate_run(row, threads=1)
    assert r["rescore_gap"] <= sel.RESCORE_TOL and r["epochs"] == 3 and r["picks"]["last"] == 3
    assert r["picks"]["auc"] == row["best_epoch"] and r["figures"]["auc"]["test_auc"] == -1.0
    assert any(r["picks"][rule] != row["best_epoch"] for rule in ("loss", "last"))  # one is evaluated here
    for rule in ("loss", "last"):
        if r["picks"][rule] != row["best_epoch"]:
            assert 0.0 <= r["figures"][rule]["test_auc"] <= 1.0 and 0.0 <= r["figures"][rule]["val_auc"] <= 1.0
    assert set(r["cross_fitted"]) == set(sel.RULES)


def test_repeat_sentence_says_whether_the_kept_epoch_runs_repeat_their_base():
    from .test_medmnist_shift import _load as load

    mm = load("medmnist")

    def row(tag, seed, epoch, val, test):
        return {"tag": tag, "best_epoch": epoch, "val_auc": val, "test_auc": test, "seed": seed}

    rows = {"p_s0_epochs": row("epochs", 0, 36, 0.99, 0.96), "p_s0_soup_best": row("soup_best", 0, 36, 0.99, 0.96),
            "p_s1_epochs": row("epochs", 1, 20, 0.98, 0.97), "p_s1_soup_best": row("soup_best", 1, 20, 0.98, 0.97),
            "p_s2_epochs": row("epochs", 2, 5, 0.9, 0.9)}  # no base: not compared
    assert "the 2 `epochs` runs repeat the `soup_best` runs of the same seeds and machine exactly" in \
        mm.repeat_sentence(rows, "epochs", "soup_best")
    rows["p_s1_soup_best"] = row("soup_best", 1, 21, 0.98, 0.97)
    assert mm.repeat_sentence(rows, "epochs", "soup_best") == \
        " 1 of the 2 `epochs` runs repeat the `soup_best` runs of the same seeds exactly."
    assert mm.repeat_sentence({}, "epochs", "soup_best") == ""
