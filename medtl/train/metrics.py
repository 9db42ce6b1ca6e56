"""Evaluation metrics for classifiers: point estimates and bootstrap CIs.

Pure functions over numpy arrays, arrays first (scikit-image style), built on
scikit-learn. Conventions shared by every function here:

- ``y_true`` is ``(N,)`` integer class indices in ``[0, K)``.
- ``probs`` is ``(N, K)`` class probabilities (rows sum to 1); a 1-D ``(N,)`` array is
  read as p(class 1) of a binary problem.
- Binary problems predict class 1 when ``p(class 1) >= threshold`` (the convention of
  :func:`sklearn.metrics.roc_curve`, so sensitivity/specificity at a threshold returned
  by :func:`youden_threshold` are exactly a point of the ROC curve). Multi-class
  problems predict the argmax and take no threshold.

The per-epoch CSV/TensorBoard logger of training lives in :mod:`medtl.train.logger`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    cohen_kappa_score,
    confusion_matrix,
    log_loss,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "ECE_BINS",
    "auc_interval",
    "bootstrap_ci",
    "clopper_pearson",
    "exact_intervals",
    "bootstrap_samples",
    "classification_metrics",
    "decide",
    "evaluate_predictions",
    "expected_calibration_error",
    "per_class_metrics",
    "youden_threshold",
]

#: Bins of the expected calibration error, as in Guo et al. 2017.
ECE_BINS = 15

#: Metrics that only exist for binary problems.
_BINARY_ONLY = ("sensitivity", "specificity", "ppv", "npv", "f1")

#: Tolerance on row sums of ``probs``; wider than float32 softmax error, far
#: narrower than what logits or sigmoid-per-class outputs give.
_SUM_TOL = 1e-3


def _prepare(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(y (N,) int64, P (N, K) float64 rows summing to 1)``."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be (N,) or (N, K>=2), got shape {np.shape(probs)}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true must be (N,) with N={p.shape[0]} (rows of probs), got shape {y.shape}")
    if y.shape[0] == 0:
        raise ValueError("no cases: y_true and probs are empty")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("y_true must hold integer class indices")
    y = y.astype(np.int64)
    k = p.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true holds class {int(y.min()) if y.min() < 0 else int(y.max())}, "
                         f"outside [0, {k}) given by probs' {k} columns")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probs must be finite and in [0, 1]; pass softmax outputs, not logits")
    sums = p.sum(axis=1)
    if np.max(np.abs(sums - 1.0)) > _SUM_TOL:
        raise ValueError("rows of probs must sum to 1 (softmax outputs); "
                         f"found a row summing to {sums[np.argmax(np.abs(sums - 1.0))]:.4g}")
    if np.max(np.abs(sums - 1.0)) > 1e-9:
        p = p / sums[:, None]  # float32 softmax drift; exact rows stay untouched
    return y, p


def _binary_threshold(k: int, threshold: float | None) -> float | None:
    if k > 2:
        if threshold is not None:
            raise ValueError(f"threshold applies to binary problems only; probs has {k} classes "
                             "(multi-class predictions are the argmax)")
        return None
    return 0.5 if threshold is None else float(threshold)


def _predict(p: np.ndarray, threshold: float | None) -> np.ndarray:
    if threshold is None:
        return p.argmax(axis=1)
    return (p[:, 1] >= threshold).astype(np.int64)


def decide(probs: Any, threshold: float | None = None) -> np.ndarray:
    """The class each case is predicted as, as :func:`classification_metrics` decides it: two classes, class 1
    when ``p(class 1) >= threshold`` (0.5 when ``None``); more, the argmax (a threshold is refused)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    return _predict(p, _binary_threshold(p.shape[1], threshold))


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins of [0, 1].

    With ``probs`` of shape ``(N, K)`` this is the standard top-label ECE of Guo et al.
    2017: the confidence is the max probability, the outcome whether the argmax is the
    true class, ``ECE = sum_b (n_b / N) |acc_b - conf_b|``. With a 1-D ``probs`` it is the
    ECE of p(class 1) against the outcome ``y_true == 1`` (the quantity a binary
    reliability diagram shows). Bins are ``(lo, hi]`` like sklearn's ``calibration_curve``.
    Hand-written: scikit-learn has no ECE, and MONAI's is class-wise over torch tensors.
    """
    binary = np.ndim(probs) == 1
    y, p = _prepare(y_true, probs)  # a NaN, a value outside [0, 1] or a label past the columns is refused
    if binary:
        conf, outcome = p[:, 1], (y == 1).astype(np.float64)
    else:
        conf, outcome = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    bins = _bin_index(conf, n_bins)
    gap = np.bincount(bins, weights=outcome - conf, minlength=n_bins)
    return float(np.abs(gap).sum() / conf.size)


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the ``(lo, hi]`` bin of each value, bins as in sklearn's calibration_curve."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], conf)


def roc_auc(y_true: Any, probs: Any) -> float:
    """ROC AUC as :func:`classification_metrics` reports it: binary, of p(class 1); multi-class,
    one-vs-rest macro; NaN when a class is absent from ``y_true``."""
    return _auc(*_prepare(y_true, probs))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    k = p.shape[1]
    if np.unique(y).size < k:
        return math.nan  # undefined, and a macro over fewer classes would not be comparable
    if k == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(k)))


def _qwk(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Quadratic weighted Cohen's kappa of ``pred`` against ``y`` over classes ``0..k-1``; NaN where undefined
    (truth and decision all one same class: no disagreement is expected by chance)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        # sklearn warns (recent) or divides 0/0 (older) where kappa is undefined: NaN is the answer meant
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(cohen_kappa_score(y, pred, labels=np.arange(k), weights="quadratic"))


def classification_metrics(y_true: Any, probs: Any, threshold: float | None = None) -> dict[str, Any]:
    """Point estimates of the usual classification metrics.

    Returns ``auc`` (binary: ROC AUC of p(class 1); multi-class: one-vs-rest macro AUC;
    NaN when a class is absent from ``y_true``), ``accuracy``, ``balanced_accuracy``,
    ``ece`` (top-label, 15 bins, see :func:`expected_calibration_error`), ``brier``
    (binary: mean ``(p1 - y)^2``; multi-class: mean ``sum_k (p_k - onehot_k)^2``),
    ``nll`` (log loss), ``n`` and ``threshold``. Binary problems add ``sensitivity``,
    ``specificity``, ``ppv``, ``npv`` and ``f1`` at ``threshold`` (default 0.5; NaN when
    the denominator is empty); multi-class problems omit them (``balanced_accuracy`` is
    their macro sensitivity), add ``qwk`` and ``threshold`` is None.

    ``qwk`` is the quadratic weighted Cohen's kappa of the predicted class (:func:`decide`)
    against the truth, ``1 - sum_ij w_ij O_ij / sum_ij w_ij E_ij`` with ``w_ij = (i - j)^2``,
    ``O`` the confusion matrix and ``E`` the one chance gives its margins: 1 is perfect
    agreement, 0 chance, negative worse than chance; NaN when truth and decision are all one
    same class. It assumes the classes are ordered grades in their index order (the order of
    ``class_names``): a miss by two grades costs four times a miss by one. For unordered
    classes it is not meaningful; read ``balanced_accuracy`` and :func:`per_class_metrics`.
    """
    y, p = _prepare(y_true, probs)
    k = p.shape[1]
    thr = _binary_threshold(k, threshold)
    pred = _predict(p, thr)
    labels = np.arange(k)
    present = np.unique(y)
    out: dict[str, Any] = {
        "auc": _auc(y, p),
        "accuracy": float(accuracy_score(y, pred)),
        # per-class recall averaged over the classes present in y_true (no warning
        # from sklearn when the prediction holds a class the truth lacks)
        "balanced_accuracy": float(np.mean([np.mean(pred[y == c] == c) for c in present])),
    }
    if k == 2:
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=labels).ravel()
        out.update(
            sensitivity=_ratio(tp, tp + fn),
            specificity=_ratio(tn, tn + fp),
            ppv=_ratio(tp, tp + fp),
            npv=_ratio(tn, tn + fn),
            f1=_ratio(2 * tp, 2 * tp + fp + fn),
        )
        brier = float(brier_score_loss(y, p[:, 1]))
    else:
        out["qwk"] = _qwk(y, pred, k)
        # multi-class Brier by hand: sklearn only has it from 1.7 (labels=...)
        brier = float(np.mean(np.sum((p - np.eye(k)[y]) ** 2, axis=1)))
    out.update(
        ece=expected_calibration_error(y, p),
        brier=brier,
        nll=float(log_loss(y, p, labels=labels)),
        n=int(y.size),
        threshold=thr,
    )
    return out


def youden_threshold(y_true: Any, p_pos: Any) -> float:
    """Threshold on p(class 1) maximising Youden's J = sensitivity + specificity - 1.

    Taken from the points of :func:`sklearn.metrics.roc_curve`; predicting class 1 when
    ``p >= threshold`` reproduces that point. Ties go to the highest threshold.
    """
    if np.ndim(p_pos) != 1:
        raise ValueError(f"p_pos must be (N,) probabilities of class 1, got shape {np.shape(p_pos)}")
    y, p = _prepare(y_true, p_pos)  # labels 0/1, probabilities finite and in [0, 1]
    if np.unique(y).size != 2:
        raise ValueError("youden_threshold needs both classes (0 and 1) in y_true")
    fpr, tpr, thresholds = roc_curve(y, p[:, 1])
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1  # index 0 is sklearn's +inf "predict nothing" point
    return float(thresholds[best])


def _class_keys(k: int, class_names: Sequence[str] | None) -> list[str]:
    """The key of each class in ``per_class``: its name, else its index as text (JSON keys are text)."""
    if class_names is None:
        return [str(c) for c in range(k)]
    keys = [str(name) for name in class_names]
    if len(keys) != k:
        raise ValueError(f"class_names names {len(keys)} classes and probs has {k} columns")
    if len(set(keys)) != k:
        raise ValueError(f"class_names holds a name twice: {keys}")
    return keys


def per_class_metrics(y_true: Any, probs: Any, threshold: float | None = None,
                      class_names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """One-vs-rest figures of each class, in class order: ``{name: {"support", "sensitivity", "ppv", "auc"}}``.

    Args:
        y_true: ``(N,)`` class indices.
        probs: ``(N, K)`` probabilities (or ``(N,)`` p(class 1)).
        threshold: as :func:`classification_metrics` (two classes only); the decision is :func:`decide`'s.
        class_names: ``K`` distinct names for the keys; default the indices ``"0"``.. ``"K-1"``.

    ``support`` is the count of cases of the class, ``sensitivity`` (recall) the share of them decided
    as it, ``ppv`` (precision) the share of the cases decided as it that are of it, ``auc`` the ROC AUC
    of its probability against the rest. NaN where the denominator is empty (no case of the class, none
    decided as it; AUC: no case of it, or only cases of it). They are the rows and columns of the
    confusion matrix: which class a model misses, and which one it over-calls.
    """
    y, p = _prepare(y_true, probs)
    k = p.shape[1]
    keys = _class_keys(k, class_names)
    return _per_class(confusion_matrix(y, _predict(p, _binary_threshold(k, threshold)), labels=np.arange(k)), y, p,
                      keys)


def _per_class(cm: np.ndarray, y: np.ndarray, p: np.ndarray, keys: list[str]) -> dict[str, dict[str, Any]]:
    """:func:`per_class_metrics` from the confusion matrix ``cm`` of the decisions (rows truth, columns decision)."""
    out: dict[str, dict[str, Any]] = {}
    for c, key in enumerate(keys):
        support = int(cm[c].sum())
        auc = float(roc_auc_score(y == c, p[:, c])) if 0 < support < y.size else math.nan
        out[key] = {"support": support, "sensitivity": _ratio(cm[c, c], support),
                    "ppv": _ratio(cm[c, c], cm[:, c].sum()), "auc": auc}
    return out


# --------------------------------------------------------------------------- bootstrap


def _stratified_indices(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, N)`` resampled case indices, drawn with replacement within each class.

    Stratifying keeps every class count fixed, so AUC and sensitivity/specificity
    are defined in every resample (Efron's stratified bootstrap).
    """
    parts = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        parts.append(members[rng.integers(0, members.size, size=(n, members.size))])
    return np.concatenate(parts, axis=1)


def _counts(idx: np.ndarray, n_cases: int) -> np.ndarray:
    """``(B, N)`` multiplicity of each case in each resample of ``idx`` ``(B, N)``."""
    b = idx.shape[0]
    flat = (np.arange(b)[:, None] * n_cases + idx).ravel()
    return np.bincount(flat, minlength=b * n_cases).reshape(b, n_cases).astype(np.float64)


def _weighted_auc(w: np.ndarray, score: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each weighted resample: ``(B, N)`` weights -> ``(B,)``.

    Hand-written because 1000 calls to ``roc_auc_score`` cost seconds: cases are
    grouped by tied score once, then for every resample
    ``AUC = sum_g pos_g (neg_below_g + neg_g / 2) / (n_pos n_neg)`` is a few matrix ops.
    """
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ws = w[:, order]
    pos = np.add.reduceat(ws * positive[order], starts, axis=1)
    neg = np.add.reduceat(ws * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(pos * (below + 0.5 * neg), axis=1) / (n_pos * n_neg)


def _weighted_qwk(w: np.ndarray, y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Quadratic weighted kappa (as :func:`_qwk`) of each weighted resample: ``(B, N)`` weights -> ``(B,)``.

    The resample's confusion matrix is ``w`` summed by cell (truth, decision); kappa follows
    from it and its margins as in :func:`sklearn.metrics.cohen_kappa_score`. NaN where undefined.
    """
    cells = np.eye(k * k)[y * k + pred]  # (N, K*K): the cell of each case
    observed = (w @ cells).reshape(-1, k, k)  # (B, K, K)
    rows, cols = observed.sum(axis=2), observed.sum(axis=1)
    expected = rows[:, :, None] * cols[:, None, :] / rows.sum(axis=1)[:, None, None]
    grades = np.arange(k)
    cost = (grades[:, None] - grades[None, :]) ** 2.0
    disagree, chance = np.sum(cost * observed, axis=(1, 2)), np.sum(cost * expected, axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(chance > 0, 1.0 - disagree / chance, math.nan)


def _weighted_metrics(y: np.ndarray, p: np.ndarray, threshold: float | None,
                      w: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`classification_metrics` of ``B`` resamples given as case weights ``(B, N)``.

    Every metric is a weighted sum over cases, so all resamples are computed at once;
    with ``w = ones((1, N))`` the values equal ``classification_metrics``.
    """
    k = p.shape[1]
    n = w.sum(axis=1)
    pred = _predict(p, threshold)
    correct = (pred == y).astype(np.float64)
    onehot = np.eye(k)[y]
    out: dict[str, np.ndarray] = {}
    present = np.unique(y)
    if present.size < k:
        out["auc"] = np.full(w.shape[0], math.nan)
    elif k == 2:
        out["auc"] = _weighted_auc(w, p[:, 1], y == 1)
    else:
        out["auc"] = np.mean([_weighted_auc(w, p[:, c], y == c) for c in range(k)], axis=0)
    out["accuracy"] = w @ correct / n
    class_n = w @ onehot[:, present]
    class_hit = w @ (onehot[:, present] * correct[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        out["balanced_accuracy"] = np.mean(class_hit / class_n, axis=1)
        if k == 2:
            yp, pp = y == 1, pred == 1
            tp, fn = w @ (yp & pp), w @ (yp & ~pp)
            fp, tn = w @ (~yp & pp), w @ (~yp & ~pp)
            out["sensitivity"] = tp / (tp + fn)
            out["specificity"] = tn / (tn + fp)
            out["ppv"] = tp / (tp + fp)
            out["npv"] = tn / (tn + fn)
            out["f1"] = 2 * tp / (2 * tp + fp + fn)
        else:
            out["qwk"] = _weighted_qwk(w, y, pred, k)
    conf = p.max(axis=1)
    top_correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = np.eye(ECE_BINS)[_bin_index(conf, ECE_BINS)]
    out["ece"] = np.abs(w @ (bins * (top_correct - conf)[:, None])).sum(axis=1) / n
    if k == 2:
        brier = (p[:, 1] - y) ** 2
    else:
        brier = np.sum((p - onehot) ** 2, axis=1)
    out["brier"] = w @ brier / n
    eps = np.finfo(np.float64).eps  # sklearn's log_loss clipping
    out["nll"] = w @ -np.log(np.clip(p[np.arange(y.size), y], eps, 1 - eps)) / n
    return out


def bootstrap_samples(
    y_true: Any,
    probs: Any,
    metric_fn: Callable[..., Mapping[str, Any]] = classification_metrics,
    n: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
) -> dict[str, np.ndarray]:
    """Every metric on ``n`` bootstrap resamples: ``{name: values}`` (NaN where a resample leaves it undefined).

    Cases are resampled with replacement within each class (stratified), ``n`` times,
    with ``numpy.random.default_rng(seed)``; the threshold stays fixed (choose it on
    validation data, not per resample). ``metric_fn(y, probs, threshold=...)`` must
    return a dict; every float value except ``n``/``threshold`` is sampled.
    The default ``classification_metrics`` runs vectorised over all resamples at once;
    another ``metric_fn`` is called once per resample (same resamples for a seed).
    """
    y, p = _prepare(y_true, probs)
    if n < 1:
        raise ValueError(f"n must be >= 1 resamples, got {n}")
    rng = np.random.default_rng(seed)
    idx = _stratified_indices(y, n, rng)
    samples: dict[str, list[np.ndarray]] = {}
    if metric_fn is classification_metrics:
        thr = _binary_threshold(p.shape[1], threshold)
        chunk = max(1, 4_000_000 // y.size)  # bounds the (B, N) weight matrix to ~32 MB
        for start in range(0, n, chunk):
            w = _counts(idx[start:start + chunk], y.size)
            for name, values in _weighted_metrics(y, p, thr, w).items():
                samples.setdefault(name, []).append(values)
    else:
        for row in idx:
            result = metric_fn(y[row], p[row], threshold=threshold)
            for name, value in result.items():
                if name in ("n", "threshold") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float, np.floating, np.integer)):
                    samples.setdefault(name, []).append(np.array([float(value)]))
    return {name: np.concatenate(parts) for name, parts in samples.items()}


def bootstrap_ci(
    y_true: Any,
    probs: Any,
    metric_fn: Callable[..., Mapping[str, Any]] = classification_metrics,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    threshold: float | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap ``(1 - alpha)`` confidence interval of every metric, over the resamples of
    :func:`bootstrap_samples` (same arguments). Resamples where a metric is NaN (e.g. PPV with no
    predicted positive) are left out; a metric NaN in all of them gets ``(nan, nan)``.
    """
    _check_alpha(alpha)
    return _percentile_intervals(bootstrap_samples(y_true, probs, metric_fn, n=n, seed=seed, threshold=threshold),
                                 alpha)[0]


def _check_alpha(alpha: float) -> None:
    """Refuse, before any resampling, an ``alpha`` that names no interval."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _percentile_intervals(samples: Mapping[str, np.ndarray], alpha: float
                          ) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """Percentile intervals of each metric's resampled values, and how many resamples each left out (NaN)."""
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    ci: dict[str, tuple[float, float]] = {}
    left_out: dict[str, int] = {}
    for name, values in samples.items():
        defined = values[~np.isnan(values)]
        left_out[name] = int(values.size - defined.size)
        if defined.size == 0:
            ci[name] = (math.nan, math.nan)
        else:
            lo, hi = np.percentile(defined, q)
            ci[name] = (float(lo), float(hi))
    return ci, left_out


def _json_value(value: Any) -> Any:
    """NaN -> None so the result is strict JSON (``json.dumps(allow_nan=False)``)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


#: Figures that count successes out of cases: their intervals are exact (Clopper-Pearson), not bootstrap.
#: A percentile bootstrap of 15 of 15 positives found is [1, 1]; at a sensitivity near 1 on small test sets its
#: 95% interval held the true value in far fewer than 95% of simulated test sets (benchmarks/bootstrap_coverage.py).
EXACT_CI = ("accuracy", "sensitivity", "specificity", "ppv", "npv")


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact binomial ``(1 - alpha)`` interval of ``k`` successes in ``n``: valid at small n and at 0 % / 100 %
    (``(0, 1)`` for ``n = 0``)."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    lo = 0.0 if k <= 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def _exact(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Clopper-Pearson interval of ``k`` in ``n``, NaN for ``n = 0`` (the point value is NaN too)."""
    return clopper_pearson(int(k), int(n), alpha) if n > 0 else (math.nan, math.nan)


def exact_intervals(cm: np.ndarray, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Clopper-Pearson intervals of the :data:`EXACT_CI` figures from a confusion matrix (rows truth, columns
    decision); NaN for a figure whose denominator is empty, as its point value is."""
    cm = np.asarray(cm, dtype=np.int64)

    out = {"accuracy": _exact(np.trace(cm), cm.sum(), alpha)}
    if cm.shape == (2, 2):
        (tn, fp), (fn, tp) = cm
        out.update(sensitivity=_exact(tp, tp + fn, alpha), specificity=_exact(tn, tn + fp, alpha),
                   ppv=_exact(tp, tp + fp, alpha), npv=_exact(tn, tn + fn, alpha))
    return out


def auc_interval(auc: float, n_pos: int, n_neg: int, alpha: float = 0.05) -> tuple[float, float]:
    """``(1 - alpha)`` interval of a binary AUC from ``n_pos`` positive and ``n_neg`` negative cases: Newcombe's
    score-type interval (method 5 of Newcombe 2006, Stat Med 25:559-573), NaN when a class is absent.

    It is the set of AUCs ``t`` with ``(auc - t)^2 <= z^2 V(t)``, ``V`` the Hanley-McNeil variance with both class
    sizes replaced by ``(n_pos + n_neg) / 2 - 1``. ``V`` shrinks to 0 only at 0 and 1, so the interval stays inside
    [0, 1] and a perfect ranking of a small test set still gets a wide one, where a percentile bootstrap gives the
    point [1, 1] and holds the true AUC in too few test sets (``benchmarks/bootstrap_coverage.py``).
    Hand-written: scikit-learn, SciPy and statsmodels give no AUC interval.
    """
    from numpy.polynomial import Polynomial
    from scipy.stats import norm

    _check_alpha(alpha)
    if n_pos < 1 or n_neg < 1 or not 0.0 <= auc <= 1.0:
        return math.nan, math.nan
    z2 = float(norm.ppf(1 - alpha / 2)) ** 2
    star = (n_pos + n_neg) / 2 - 1
    t = Polynomial([0.0, 1.0])
    # (auc - t)^2 - z^2 V(t), times n_pos n_neg (2 - t)(1 + t) > 0 on [0, 1]: a quartic with the same sign
    excess = (n_pos * n_neg * (auc - t) ** 2 * (2 - t) * (1 + t)
              - z2 * t * (1 - t) * ((2 - t) * (1 + t) + star * (1 - t) * (1 + t) + star * t * (2 - t)))
    cuts = [0.0, *sorted(r.real for r in excess.roots() if abs(r.imag) < 1e-9 and 0.0 < r.real < 1.0), 1.0]
    inside = [excess((a + b) / 2) <= 0 for a, b in zip(cuts[:-1], cuts[1:])]
    j = next(i for i in range(len(inside)) if cuts[i] <= auc <= cuts[i + 1])  # the piece holding the estimate
    lo = hi = j
    while lo > 0 and inside[lo - 1]:  # a root counted twice (at auc = 0 or 1) splits one piece in two
        lo -= 1
    while hi < len(inside) - 1 and inside[hi + 1]:
        hi += 1
    return float(cuts[lo]), float(cuts[hi + 1])


def evaluate_predictions(
    y_true: Any,
    probs: Any,
    threshold: float | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Point metrics, 95% CIs and the confusion matrix as one strict-JSON dict.

    This is what a model card stores under ``metrics.test``, e.g.
    ``{"auc": 0.95, ..., "threshold": 0.5, "n": 600, "confusion_matrix": [[..]],
    "ci": {"auc": [0.93, 0.97], ...}, "bootstrap": {"n": 1000, "seed": 0, "alpha": 0.05}}``.
    ``confusion_matrix[i][j]`` counts cases of true class ``i`` predicted ``j``.
    NaN values become ``None``; ``bootstrap=0`` gives an empty ``ci``. The intervals of counted figures
    (:data:`EXACT_CI`) are exact (Clopper-Pearson), a binary AUC's is Newcombe's (:func:`auc_interval`), and the
    others (``qwk`` included) are stratified percentile bootstrap intervals.

    More than two classes add ``qwk`` (see :func:`classification_metrics`) and ``per_class``:
    :func:`per_class_metrics` keyed by ``class_names`` (default the indices as text), each entry with its
    own ``ci`` (empty when ``bootstrap=0``): Clopper-Pearson for ``sensitivity`` and ``ppv``, Newcombe's for
    the one-vs-rest ``auc``. Two classes get neither (their figures are the top-level ones).
    """
    y, p = _prepare(y_true, probs)
    k = p.shape[1]
    keys = _class_keys(k, class_names)  # a wrong list of names is refused before any resampling
    point = classification_metrics(y, p, threshold)
    cm = confusion_matrix(y, _predict(p, point["threshold"]), labels=np.arange(k))
    result: dict[str, Any] = {name: _json_value(value) for name, value in point.items()}
    result["confusion_matrix"] = cm.tolist()
    per_class = _per_class(cm, y, p, keys) if k > 2 else {}
    if per_class:
        result["per_class"] = {key: {name: _json_value(v) for name, v in figures.items()} | {"ci": {}}
                               for key, figures in per_class.items()}
    result["ci"] = {}
    if bootstrap > 0:
        _check_alpha(alpha)
        ci, left_out = _percentile_intervals(bootstrap_samples(y, p, n=bootstrap, seed=seed, threshold=threshold),
                                             alpha)
        not_resampled = exact_intervals(cm, alpha)
        if k == 2:  # Newcombe's interval, where the bootstrap's is too narrow (a point at AUC 1)
            n_pos = int(np.sum(y == 1))
            not_resampled["auc"] = auc_interval(point["auc"], n_pos, y.size - n_pos, alpha)
        ci.update(not_resampled)
        result["ci"] = {name: [_json_value(lo), _json_value(hi)] for name, (lo, hi) in ci.items()}
        for c, (key, figures) in enumerate(per_class.items()):
            spans = {"sensitivity": _exact(cm[c, c], cm[c].sum(), alpha),
                     "ppv": _exact(cm[c, c], cm[:, c].sum(), alpha),
                     "auc": auc_interval(figures["auc"], figures["support"], y.size - figures["support"], alpha)}
            result["per_class"][key]["ci"] = {name: [_json_value(lo), _json_value(hi)]
                                              for name, (lo, hi) in spans.items()}
        result["bootstrap"] = {"n": int(bootstrap), "seed": int(seed), "alpha": float(alpha),
                               "method": "stratified percentile",
                               "exact": [name for name in EXACT_CI if name in ci],  # Clopper-Pearson instead
                               "newcombe": ["auc"] if k == 2 else [],  # Newcombe 2006 method 5 instead
                               # resamples a figure was undefined in (PPV with no predicted positive), left out
                               "undefined": {name: c for name, c in left_out.items()
                                             if c and name not in not_resampled}}
    return result
