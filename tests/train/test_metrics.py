"""Metrics against hand-computed values and scikit-learn; bootstrap."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from medtl.train.metrics import (
    _prepare,
    _weighted_metrics,
    bootstrap_ci,
    bootstrap_samples,
    classification_metrics,
    evaluate_predictions,
    expected_calibration_error,
    roc_auc,
    youden_threshold,
)


def binary(p_pos) -> np.ndarray:
    p = np.asarray(p_pos, dtype=np.float64)
    return np.stack([1 - p, p], axis=1)


def noisy_binary(n: int, seed: int = 0, separation: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + separation * y, 0.2), 0, 1)
    return y, binary(np.round(p, 2))  # rounding makes tied scores, the hard case for AUC


def softmax_cases(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    e = np.exp(logits)
    return y, e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- AUC


def test_auc_perfect_inverted_and_random():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert classification_metrics(y, binary(p))["auc"] == 1.0
    assert classification_metrics(y, binary(1 - p))["auc"] == 0.0
    rng = np.random.default_rng(0)
    y_big = rng.integers(0, 2, 20000)
    assert abs(classification_metrics(y_big, binary(rng.random(20000)))["auc"] - 0.5) < 0.02


def test_auc_counts_ties_as_half():
    # pairs (pos, neg): (0.5 vs 0.5) tie = 0.5, (0.5 vs 0.2) = 1, (0.9 vs both) = 2 -> 3.5 / 4
    y = np.array([0, 0, 1, 1])
    p = np.array([0.5, 0.2, 0.5, 0.9])
    assert classification_metrics(y, binary(p))["auc"] == pytest.approx(3.5 / 4)


def test_one_dimensional_probs_mean_p_class_1():
    y, probs = noisy_binary(50)
    assert classification_metrics(y, probs[:, 1]) == classification_metrics(y, probs)


def test_multiclass_auc_equals_sklearn_ovr_and_absent_class_is_nan():
    y, probs = softmax_cases(300, 4)
    m = classification_metrics(y, probs)
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr")) == roc_auc(y, probs)
    assert m["threshold"] is None
    assert "sensitivity" not in m and "f1" not in m
    assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    absent = y != 3
    m = classification_metrics(y[absent], probs[absent])
    assert math.isnan(m["auc"]) and math.isnan(roc_auc(y[absent], probs[absent]))
    assert m["accuracy"] == pytest.approx(np.mean(probs[absent].argmax(1) == y[absent]))


def test_binary_single_class_auc_is_nan_not_an_error():
    m = classification_metrics(np.zeros(4, int), binary([0.1, 0.2, 0.6, 0.3]))
    assert math.isnan(m["auc"])
    assert math.isnan(m["sensitivity"])  # no positives
    assert m["specificity"] == 0.75


# --------------------------------------------------------------------------- threshold metrics


def test_sensitivity_specificity_at_threshold_by_hand():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.2, 0.7, 0.35, 0.3, 0.1, 0.05, 0.4])
    m = classification_metrics(y, binary(p), threshold=0.4)
    # p >= 0.4 -> positive: TP = 3 (0.9, 0.6, 0.4), FN = 1, FP = 2 (0.7, 0.4), TN = 4
    assert m["sensitivity"] == 3 / 4
    assert m["specificity"] == 4 / 6
    assert m["ppv"] == 3 / 5
    assert m["npv"] == 4 / 5
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m["threshold"] == 0.4 and m["n"] == 10
    assert classification_metrics(y, binary(p))["threshold"] == 0.5  # the default
    assert classification_metrics(y, binary(p), threshold=0.41)["sensitivity"] == 2 / 4


def test_brier_and_nll_match_sklearn():
    y, probs = noisy_binary(80)
    m = classification_metrics(y, probs)
    assert m["brier"] == pytest.approx(np.mean((probs[:, 1] - y) ** 2))
    assert m["nll"] == pytest.approx(log_loss(y, probs))
    y, probs = softmax_cases(80, 3)
    m = classification_metrics(y, probs)
    assert m["brier"] == pytest.approx(brier_score_loss(y, probs, labels=[0, 1, 2]))
    assert m["nll"] == pytest.approx(log_loss(y, probs))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="logits"):
        classification_metrics([0, 1], [[2.0, -1.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="sum to 1"):
        classification_metrics([0, 1], [[0.2, 0.2], [0.5, 0.5]])
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 2], binary([0.1, 0.9]))
    with pytest.raises(ValueError, match="binary problems only"):
        classification_metrics([0, 1, 2], np.eye(3), threshold=0.5)


# --------------------------------------------------------------------------- calibration


def test_ece_zero_when_calibrated_by_construction():
    # top-label confidence 0.75 in every case and exactly 3 of 4 argmax predictions right
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.75, 0.75, 0.75, 0.75, 0.25, 0.25, 0.25, 0.25])
    assert expected_calibration_error(y, binary(p)) == pytest.approx(0.0, abs=1e-12)
    assert classification_metrics(y, binary(p))["ece"] == pytest.approx(0.0, abs=1e-12)


def test_ece_near_zero_for_calibrated_sample():
    rng = np.random.default_rng(1)
    p = rng.random(40000)
    y = (rng.random(40000) < p).astype(int)  # outcome drawn with the stated probability
    assert expected_calibration_error(y, binary(p)) < 0.02
    assert expected_calibration_error(y, p) < 0.02  # p(class 1) form


def test_ece_of_overconfident_model_is_the_gap():
    # bin (0.8, 0.867]: confidence 0.85, 2 of 4 right -> gap 0.35
    # bin (0.933, 1]:   confidence 0.95, 3 of 4 right -> gap 0.20;  ECE = (4*0.35 + 4*0.2) / 8
    y = np.array([1, 1, 0, 0, 1, 1, 1, 0])
    p = np.array([0.85, 0.85, 0.85, 0.85, 0.95, 0.95, 0.95, 0.95])
    assert expected_calibration_error(y, binary(p)) == pytest.approx((4 * 0.35 + 4 * 0.2) / 8)
    # p(class 1) form over 10 bins, hand value: |0.5 - 0.85| / 2 + |0.75 - 0.95| / 2
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.35 / 2 + 0.2 / 2)


def test_ece_multiclass_top_label():
    probs = np.array([[0.58, 0.32, 0.1], [0.58, 0.22, 0.2], [0.1, 0.08, 0.82], [0.1, 0.08, 0.82]])
    y = np.array([0, 1, 2, 2])
    # bin (0.533, 0.6]: conf 0.58, acc 0.5; bin (0.8, 0.867]: conf 0.82, acc 1.0
    assert expected_calibration_error(y, probs) == pytest.approx((2 * 0.08 + 2 * 0.18) / 4)


@pytest.mark.parametrize("y, p, message", [
    ([0, 1], [math.nan, 0.5], "finite and in \\[0, 1\\]"),
    ([0, 1], [1.5, 0.5], "finite and in \\[0, 1\\]"),
    ([0, 2], [0.5, 0.5], "outside \\[0, 2\\)"),
])
def test_ece_of_p_class_1_refuses_what_the_two_column_form_refuses(y, p, message):
    """The p(class 1) form (the reliability diagram's) returned NaN for a NaN, and a number for 1.5 or label 2."""
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(y, p)


# --------------------------------------------------------------------------- Youden


def test_youden_threshold_on_a_known_curve():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    # >= 0.6: sens 4/5, spec 4/4 -> J = 0.8; >= 0.4: sens 1, spec 3/4 -> J = 0.75
    t = youden_threshold(y, p)
    assert t == 0.6
    m = classification_metrics(y, binary(p), threshold=t)
    assert (m["sensitivity"], m["specificity"]) == (0.8, 1.0)


def test_youden_threshold_maximises_j_over_all_thresholds():
    y, probs = noisy_binary(200, seed=3)
    t = youden_threshold(y, probs[:, 1])

    p = probs[:, 1]

    def j(thr: float) -> float:
        return np.mean(p[y == 1] >= thr) + np.mean(p[y == 0] < thr) - 1

    assert j(t) == pytest.approx(max(j(c) for c in np.unique(p)))
    m = classification_metrics(y, probs, threshold=t)
    assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx(j(t))
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold(np.zeros(3, int), [0.1, 0.2, 0.3])


@pytest.mark.parametrize("y, p, message", [
    ([0, 1, 0, 1], [math.nan, 0.5, 0.2, 0.9], "finite and in \\[0, 1\\]"),
    ([0, 2, 0, 2], [0.1, 0.5, 0.2, 0.9], "outside \\[0, 2\\)"),
    ([0, 1], [[0.9, 0.1], [0.2, 0.8]], "p_pos must be \\(N,\\)"),
])
def test_youden_threshold_refuses_bad_input_in_medtl_words(y, p, message):
    """scikit-learn's own errors ("Input contains NaN.", "pos_label is not specified") reached the caller."""
    with pytest.raises(ValueError, match=message):
        youden_threshold(y, p)


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("k", [2, 3])
def test_vectorised_metrics_with_unit_weights_equal_point_metrics(k):
    y, probs = noisy_binary(120) if k == 2 else softmax_cases(120, 3)
    thr = 0.5 if k == 2 else None
    point = classification_metrics(y, probs, threshold=thr)
    fast = _weighted_metrics(*_prepare(y, probs), thr, np.ones((1, y.size)))
    assert set(fast) == set(point) - {"n", "threshold"}
    for name, values in fast.items():
        assert values[0] == pytest.approx(point[name], abs=1e-12), name


@pytest.mark.parametrize("k", [2, 3])
def test_fast_bootstrap_equals_calling_metrics_on_every_resample(k):
    y, probs = noisy_binary(60, seed=2) if k == 2 else softmax_cases(60, 3, seed=2)

    def sklearn_path(yy, pp, threshold=None):
        return classification_metrics(yy, pp, threshold)

    fast = bootstrap_ci(y, probs, n=40, seed=5)
    slow = bootstrap_ci(y, probs, metric_fn=sklearn_path, n=40, seed=5)
    assert fast.keys() == slow.keys()
    for name in fast:
        assert fast[name] == pytest.approx(slow[name], abs=1e-12), name


def test_bootstrap_ci_contains_point_narrows_and_is_deterministic():
    y, probs = noisy_binary(300, seed=4)
    point = classification_metrics(y, probs)
    ci = bootstrap_ci(y, probs, n=300, seed=0)
    for name, (lo, hi) in ci.items():
        assert lo <= point[name] <= hi, name
    assert ci == bootstrap_ci(y, probs, n=300, seed=0)
    assert ci != bootstrap_ci(y, probs, n=300, seed=1)
    y_big, probs_big = noisy_binary(3000, seed=4)
    ci_big = bootstrap_ci(y_big, probs_big, n=300, seed=0)
    width = ci["auc"][1] - ci["auc"][0]
    assert ci_big["auc"][1] - ci_big["auc"][0] < 0.6 * width  # ~1/sqrt(10) expected
    wide = bootstrap_ci(y, probs, n=300, seed=0, alpha=0.01)
    assert wide["auc"][0] <= ci["auc"][0] and wide["auc"][1] >= ci["auc"][1]


@pytest.mark.parametrize("k", [2, 3])
def test_bootstrap_samples_are_the_resamples_the_ci_reads(k):
    """The per-resample values (a validation AUC's bootstrap sd, say) are the ones behind the CI: its bounds are
    their percentiles, and the AUCs equal sklearn's on each stratified resample of the same seed."""
    y, probs = noisy_binary(80, seed=6) if k == 2 else softmax_cases(80, 3, seed=6)
    samples = bootstrap_samples(y, probs, n=50, seed=7)
    assert all(v.shape == (50,) for v in samples.values())
    assert bootstrap_ci(y, probs, n=50, seed=7)["auc"] == tuple(np.percentile(samples["auc"], [2.5, 97.5]))
    rng = np.random.default_rng(7)  # the stratified draw, class by class in label order
    idx = np.concatenate([np.flatnonzero(y == c)[rng.integers(0, (y == c).sum(), size=(50, (y == c).sum()))]
                          for c in np.unique(y)], axis=1)
    by_hand = [roc_auc_score(y[i], probs[i][:, 1] if k == 2 else probs[i], multi_class="ovr") for i in idx]
    np.testing.assert_allclose(samples["auc"], by_hand, atol=1e-12)


def test_bootstrap_keeps_class_counts_so_auc_is_always_defined():
    y = np.array([0] * 30 + [1] * 2)  # plain resampling would often lose both positives
    p = np.linspace(0.01, 0.99, 32)
    ci = bootstrap_ci(y, binary(p), n=200)
    assert not any(math.isnan(v) for v in ci["auc"])


# --------------------------------------------------------------------------- evaluate


def test_evaluate_predictions_is_strict_json():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.2, 0.7, 0.8, 0.3])
    result = evaluate_predictions(y, binary(p), threshold=0.5, bootstrap=50)
    text = json.dumps(result, allow_nan=False)
    back = json.loads(text)
    assert back["confusion_matrix"] == [[2, 1], [1, 2]]
    assert back["n"] == 6 and back["threshold"] == 0.5
    assert back["auc"] == pytest.approx(roc_auc_score(y, p))
    assert set(back["ci"]) >= {"auc", "sensitivity", "specificity", "ece"}
    assert back["bootstrap"]["n"] == 50
    assert evaluate_predictions(y, binary(p), bootstrap=0)["ci"] == {}


def test_evaluate_predictions_nan_becomes_null():
    result = evaluate_predictions(np.zeros(3, int), binary([0.1, 0.2, 0.3]), bootstrap=10)
    assert result["auc"] is None and result["ci"]["auc"] == [None, None]
    json.dumps(result, allow_nan=False)


def test_readme_states_the_definitions_the_code_uses():
    """The README's account of the figures (averaging, threshold side, ECE bins, CI method) follows the code."""
    import inspect
    from pathlib import Path

    from medtl.train import metrics, plots

    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert f"ECE is top-label (the largest probability against whether the argmax is right) over {metrics.ECE_BINS} " \
           "equal-width bins" in readme
    diagram_bins = inspect.signature(plots.plot_calibration).parameters["n_bins"].default
    assert f"the reliability diagram draws {diagram_bins} bins" in readme
    assert "when its probability is `>=` the threshold" in readme
    assert classification_metrics([0, 1], [0.3, 0.3], threshold=0.3)["sensitivity"] == 1.0  # p == t: positive
    assert "unweighted mean of the one-vs-rest AUCs (macro)" in readme
    assert "percentile intervals of a stratified bootstrap" in readme
    assert "CIs of counted figures (accuracy, sensitivity, specificity, PPV, NPV) are exact (Clopper-Pearson" in readme
    assert "(accuracy, sensitivity, specificity, PPV, NPV)" in readme and metrics.EXACT_CI == (
        "accuracy", "sensitivity", "specificity", "ppv", "npv")
    assert "a two-class AUC's is Newcombe's score interval (method 5 of Newcombe, Stat Med 2006" in readme
    assert "`bootstrap.exact` and `bootstrap.newcombe` name the figures whose interval is not the bootstrap's" in readme
    boot = evaluate_predictions([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.6], bootstrap=5)["bootstrap"]
    assert boot["method"] == "stratified percentile" and boot["exact"] == list(metrics.EXACT_CI)
    assert boot["newcombe"] == ["auc"]
    assert "(the macro AUC and QWK of more classes," in readme
    assert "quadratic weighted Cohen's kappa of the argmax against the truth" in readme
    assert "a miss by two grades costing four times a miss by one" in readme
    grades = [0, 1, 2, 0, 1, 2]  # two misses by one grade, or by two, with the same margins (the same chance term)
    by_one = classification_metrics(grades, np.eye(3)[[1, 0, 2, 0, 1, 2]])["qwk"]
    by_two = classification_metrics(grades, np.eye(3)[[2, 1, 0, 0, 1, 2]])["qwk"]
    assert 1 - by_two == pytest.approx(4 * (1 - by_one), abs=1e-12)
    three = evaluate_predictions([0, 1, 2], np.eye(3)[[0, 1, 1]], bootstrap=5, class_names=["a", "b", "c"])
    assert set(three["per_class"]["c"]) == {"support", "sensitivity", "ppv", "auc", "ci"}
    assert set(three["per_class"]["c"]["ci"]) == {"sensitivity", "ppv", "auc"}
    from medtl.guard.ood import FEW_VALIDATION

    assert f"(judged on {FEW_VALIDATION} validation images or more" in readme


def test_counted_figures_get_exact_intervals_that_a_perfect_small_result_does_not_shrink_to_a_point():
    """A percentile bootstrap of 15 of 15 positives found gave the interval [1, 1]."""
    from scipy.stats import binomtest

    y = np.r_[np.zeros(15, int), np.ones(15, int)]
    p = np.r_[np.linspace(0.05, 0.6, 15), np.linspace(0.55, 0.99, 15)]  # every positive found, 3 false alarms
    m = evaluate_predictions(y, p, threshold=0.5, bootstrap=200)
    assert m["sensitivity"] == 1.0 and m["confusion_matrix"] == [[12, 3], [0, 15]]
    for name, k, n in (("sensitivity", 15, 15), ("specificity", 12, 15), ("accuracy", 27, 30), ("ppv", 15, 18),
                       ("npv", 12, 12)):
        ref = binomtest(k, n).proportion_ci(0.95, method="exact")
        np.testing.assert_allclose(m["ci"][name], [ref.low, ref.high], atol=1e-12, err_msg=name)
    assert m["ci"]["sensitivity"][0] < 0.79
    assert m["ci"]["auc"] != m["ci"]["accuracy"]  # the AUC's is not a proportion's
    one_class = evaluate_predictions([1, 1, 1], [0.2, 0.7, 0.9], threshold=0.5, bootstrap=20)
    assert one_class["ci"]["specificity"] == [None, None] and one_class["specificity"] is None


def test_the_resamples_left_out_of_an_interval_are_counted():
    """Resamples where a figure was undefined were dropped from its interval without a trace in metrics.json."""
    m = evaluate_predictions([1, 1, 1, 1], [0.2, 0.7, 0.9, 0.6], threshold=0.5, bootstrap=30)
    assert m["auc"] is None and m["ci"]["auc"] == [None, None]
    assert m["bootstrap"]["undefined"] == {}  # AUC (Newcombe) and specificity (exact): nothing resampled
    y3 = np.array([0, 1, 0, 1])  # three classes, the third absent: the macro AUC's bootstrap is undefined throughout
    three = evaluate_predictions(y3, np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.3, 0.6, 0.1]]),
                                 bootstrap=30)
    assert three["auc"] is None and three["bootstrap"]["undefined"]["auc"] == 30
    both = evaluate_predictions([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.6], bootstrap=30)
    assert both["bootstrap"]["undefined"] == {}


def _hanley_mcneil_newcombe(t: float, n_pos: int, n_neg: int) -> float:
    """Newcombe's (2006) variance of an AUC of ``t``: Hanley-McNeil's, written with its Q1 and Q2, both
    class sizes replaced by (n_pos + n_neg) / 2."""
    q1, q2 = t / (2 - t), 2 * t * t / (1 + t)
    star = (n_pos + n_neg) / 2
    return (t * (1 - t) + (star - 1) * (q1 - t * t) + (star - 1) * (q2 - t * t)) / (n_pos * n_neg)


@pytest.mark.parametrize("auc,n_pos,n_neg", [(0.963, 234, 390), (0.75, 15, 15), (1.0, 15, 15), (0.0, 4, 9),
                                             (0.5, 2, 2), (0.92, 10, 90), (1.0, 1, 1), (0.999, 300, 3)])
def test_auc_interval_is_the_set_newcombes_inequality_holds_on(auc, n_pos, n_neg):
    """Each bound solves (auc - t)^2 = z^2 V(t), and a dense grid of t agrees on which side holds."""
    from scipy.stats import norm

    from medtl.train.metrics import auc_interval

    z2 = norm.ppf(0.975) ** 2
    lo, hi = auc_interval(auc, n_pos, n_neg)
    assert 0.0 <= lo <= auc <= hi <= 1.0 and hi - lo > 0.005
    for bound, edge in ((lo, 0.0), (hi, 1.0)):
        if bound != edge or edge == auc:
            assert abs((auc - bound) ** 2 - z2 * _hanley_mcneil_newcombe(bound, n_pos, n_neg)) < 1e-12
    grid = np.linspace(0, 1, 20001)
    holds = (auc - grid) ** 2 <= z2 * np.array([_hanley_mcneil_newcombe(t, n_pos, n_neg) for t in grid])
    inside = (grid > lo + 1e-9) & (grid < hi - 1e-9)
    assert holds[inside].all() and not holds[(grid < lo - 1e-4) | (grid > hi + 1e-4)].any()


def test_a_perfect_small_test_set_gets_an_auc_interval_not_a_point():
    """A stratified percentile bootstrap of 15 + 15 perfectly ranked cases gave the AUC interval [1, 1]."""
    y = np.r_[np.zeros(15, int), np.ones(15, int)]
    p = np.r_[np.linspace(0.05, 0.45, 15), np.linspace(0.55, 0.99, 15)]
    m = evaluate_predictions(y, p, bootstrap=200)
    assert m["auc"] == 1.0 and bootstrap_ci(y, binary(p), n=200)["auc"] == (1.0, 1.0)
    lo, hi = m["ci"]["auc"]
    assert hi == 1.0 and 0.85 < lo < 0.88  # 0.8648
    assert m["bootstrap"]["newcombe"] == ["auc"] and "auc" not in m["bootstrap"]["undefined"]
    y3, p3 = softmax_cases(60, 3)
    three = evaluate_predictions(y3, p3, bootstrap=50)
    assert three["bootstrap"]["newcombe"] == [] and three["ci"]["auc"] == list(bootstrap_ci(y3, p3, n=50)["auc"])
    with pytest.raises(ValueError, match="alpha"):
        from medtl.train.metrics import auc_interval

        auc_interval(0.9, 10, 10, alpha=1.5)


# --------------------------------------------------------------------------- more than two classes


#: The keys a two-class result had before ``qwk`` and ``per_class`` were added for more classes.
BINARY_KEYS = {"auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "ece",
               "brier", "nll", "n", "threshold"}


def graded_cases() -> tuple[np.ndarray, np.ndarray]:
    """Five ordered grades, grade 3 absent from the truth, rows with tied largest probabilities (the argmax,
    :func:`decide`, takes the first) and decisions that miss by one grade and by several."""
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 0, 1, 2, 4, 4])
    p = np.array([
        [0.6, 0.2, 0.1, 0.05, 0.05], [0.4, 0.4, 0.1, 0.05, 0.05], [0.2, 0.5, 0.1, 0.1, 0.1],  # tie 0/1 -> 0
        [0.1, 0.7, 0.1, 0.05, 0.05], [0.1, 0.3, 0.3, 0.2, 0.1], [0.1, 0.2, 0.6, 0.05, 0.05],  # tie 1/2 -> 1
        [0.05, 0.05, 0.8, 0.05, 0.05], [0.1, 0.1, 0.4, 0.4, 0.0], [0.0, 0.1, 0.3, 0.6, 0.0],  # tie 2/3 -> 2
        [0.5, 0.1, 0.2, 0.1, 0.1],
        [0.0, 0.0, 0.1, 0.3, 0.6], [0.1, 0.1, 0.1, 0.35, 0.35], [0.0, 0.2, 0.2, 0.2, 0.4],  # tie 3/4 -> 3
        [0.2, 0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25, 0.0],  # all tied -> 0
        [0.0, 0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0, 1.0],
    ])
    return y, p


def test_qwk_equals_sklearn_with_tied_probabilities_and_an_absent_class():
    from sklearn.metrics import cohen_kappa_score

    from medtl.train.metrics import decide

    y, p = graded_cases()
    pred = decide(p)
    assert pred[1] == 0 and pred[11] == 3 and pred[14] == 0  # ties went to the first class
    assert 3 not in y and 3 in pred
    m = classification_metrics(y, p)
    ref = cohen_kappa_score(y, pred, labels=range(5), weights="quadratic")
    assert m["qwk"] == pytest.approx(ref, abs=1e-12)
    gap_y, gap_pred = [0, 1, 4, 4, 0], [0, 4, 4, 1, 1]  # grades 2 and 3 in neither: grade 4 is 3 from grade 1
    gap = classification_metrics(gap_y, np.eye(5)[gap_pred])["qwk"]
    assert gap == pytest.approx(cohen_kappa_score(gap_y, gap_pred, labels=range(5), weights="quadratic"), abs=1e-12)
    assert gap != pytest.approx(cohen_kappa_score(gap_y, gap_pred, weights="quadratic"))  # not 1 from grade 1
    # by hand: O = [[1,0,0],[0,0,1],[0,0,1]], E = outer((1,1,1), (1,0,2)) / 3, sum w O = 1, sum w E = 5
    assert classification_metrics([0, 1, 2], np.eye(3)[[0, 2, 2]])["qwk"] == pytest.approx(0.8, abs=1e-12)
    assert math.isnan(classification_metrics([1, 1], np.eye(3)[[1, 1]])["qwk"])  # all one grade: undefined
    assert evaluate_predictions([1, 1], np.eye(3)[[1, 1]], bootstrap=5)["qwk"] is None


def test_per_class_figures_are_the_rows_and_columns_of_the_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    from medtl.train.metrics import decide, per_class_metrics

    y, p = graded_cases()
    cm = confusion_matrix(y, decide(p), labels=range(5))
    names = ["none", "mild", "moderate", "severe", "proliferative"]
    figures = per_class_metrics(y, p, class_names=names)
    assert list(figures) == names
    for c, name in enumerate(names):
        got = figures[name]
        assert got["support"] == cm[c].sum() == np.sum(y == c)
        if c == 3:  # absent from the truth: no sensitivity, no AUC; decided twice, never right
            assert math.isnan(got["sensitivity"]) and math.isnan(got["auc"]) and got["ppv"] == 0.0
            continue
        assert got["sensitivity"] == pytest.approx(cm[c, c] / cm[c].sum(), abs=1e-12)
        assert got["ppv"] == pytest.approx(cm[c, c] / cm[:, c].sum(), abs=1e-12)
        assert got["auc"] == pytest.approx(roc_auc_score(y == c, p[:, c]), abs=1e-12)
    assert list(per_class_metrics(y, p)) == ["0", "1", "2", "3", "4"]
    never = per_class_metrics([0, 1, 2], np.eye(3)[[0, 2, 2]])["1"]
    assert math.isnan(never["ppv"]) and never["sensitivity"] == 0.0  # never decided as class 1


def test_evaluate_gives_per_class_figures_with_exact_intervals_as_strict_json():
    from scipy.stats import binomtest

    from medtl.train.metrics import auc_interval

    y, p = graded_cases()
    names = ["none", "mild", "moderate", "severe", "proliferative"]
    m = json.loads(json.dumps(evaluate_predictions(y, p, bootstrap=50, class_names=names), allow_nan=False))
    cm = np.array(m["confusion_matrix"])
    assert list(m["per_class"]) == names
    for c, name in enumerate(names):
        entry = m["per_class"][name]
        for figure, k, n in (("sensitivity", cm[c, c], cm[c].sum()), ("ppv", cm[c, c], cm[:, c].sum())):
            if n == 0:
                assert entry[figure] is None and entry["ci"][figure] == [None, None]
            else:
                ref = binomtest(int(k), int(n)).proportion_ci(0.95, method="exact")
                np.testing.assert_allclose(entry["ci"][figure], [ref.low, ref.high], atol=1e-12, err_msg=name)
        if entry["auc"] is None:
            assert entry["ci"]["auc"] == [None, None]
        else:
            assert entry["ci"]["auc"] == list(auc_interval(entry["auc"], entry["support"], y.size - entry["support"]))
    assert m["per_class"]["severe"]["sensitivity"] is None and m["per_class"]["severe"]["auc"] is None
    assert all(e["ci"] == {} for e in evaluate_predictions(y, p, bootstrap=0)["per_class"].values())
    with pytest.raises(ValueError, match="class_names names 2 classes and probs has 5"):
        evaluate_predictions(y, p, bootstrap=0, class_names=["a", "b"])
    with pytest.raises(ValueError, match="twice"):
        evaluate_predictions(y, p, bootstrap=0, class_names=["a", "b", "a", "c", "d"])


def test_bootstrap_qwk_interval_holds_the_estimate_and_is_seeded():
    """The vectorised resample QWK (a weighted confusion matrix) equals sklearn's on every stratified resample."""
    from sklearn.metrics import cohen_kappa_score

    y, p = softmax_cases(150, 5, seed=3)
    m = evaluate_predictions(y, p, bootstrap=200, seed=4)
    lo, hi = m["ci"]["qwk"]
    assert lo < m["qwk"] < hi and hi - lo > 0.05
    assert evaluate_predictions(y, p, bootstrap=200, seed=4)["ci"]["qwk"] == [lo, hi]
    assert evaluate_predictions(y, p, bootstrap=200, seed=5)["ci"]["qwk"] != [lo, hi]
    samples = bootstrap_samples(y, p, n=30, seed=4)["qwk"]
    rng = np.random.default_rng(4)
    idx = np.concatenate([np.flatnonzero(y == c)[rng.integers(0, (y == c).sum(), size=(30, (y == c).sum()))]
                          for c in np.unique(y)], axis=1)
    by_hand = [cohen_kappa_score(y[i], p[i].argmax(axis=1), labels=range(5), weights="quadratic") for i in idx]
    np.testing.assert_allclose(samples, by_hand, atol=1e-12)


def test_two_classes_keep_exactly_their_keys():
    y, probs = noisy_binary(40, seed=1)
    assert set(classification_metrics(y, probs)) == BINARY_KEYS
    m = evaluate_predictions(y, probs, bootstrap=20, class_names=["normal", "lesion"])
    assert set(m) == BINARY_KEYS | {"confusion_matrix", "ci", "bootstrap"}
    assert set(m["ci"]) == BINARY_KEYS - {"n", "threshold"}
    assert set(bootstrap_samples(y, probs, n=5)) == BINARY_KEYS - {"n", "threshold"}
