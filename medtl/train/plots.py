"""Evaluation and training plots written as PNG files.

Every function draws on a bare :class:`matplotlib.figure.Figure`, which renders with
the Agg canvas: no pyplot, no global backend switch, no display needed, and nothing
left registered to leak memory in a long-running app (the pattern matplotlib
recommends for servers). Each PNG is written atomically and its path returned.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import (
    auc as area_under_curve,
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_curve,
)

from medtl._fileutil import atomic_path
from medtl.train.logger import read_history
from medtl.train.metrics import _prepare, expected_calibration_error

__all__ = [
    "DPI",
    "UNIT_METRICS",
    "learning_curve_panels",
    "plot_calibration",
    "plot_confusion",
    "plot_learning_curves",
    "plot_lr_find",
    "plot_pr",
    "plot_pr_multiclass",
    "plot_roc",
    "plot_roc_multiclass",
    "save_evaluation_plots",
]

#: Resolution of every PNG written here.
DPI = 120

_REFERENCE = {"color": "0.6", "linestyle": "--", "linewidth": 1}


def is_medtl_plot(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a PNG :func:`_save` wrote (its ``Software`` text chunk names medtl): a later run
    replaces its own plots, never a user's picture of the same name."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and str(im.info.get("Software", "")).startswith("medtl")
    except Exception:  # noqa: BLE001 - unreadable as a PNG medtl wrote: not ours
        return False


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically, its ``Software`` text chunk naming medtl (how a later
    run tells its own plot from a user's picture of the same name); return the path."""
    from medtl import __version__

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": f"medtl {__version__} (Matplotlib)"})
    fig.clear()
    return path


def _binary_inputs(y_true: Any, p_pos: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(p_pos, dtype=np.float64)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"y_true and p_pos must both be (N,), got {y.shape} and {s.shape}")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("binary plots need y_true in {0, 1}")
    return y.astype(np.int64), s


def _square_unit_axes(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


# --------------------------------------------------------------------------- training


#: Metrics on a 0-1 scale (the keys of :func:`~medtl.train.metrics.classification_metrics`, after
#: any ``train_``/``val_``/``test_`` prefix): they share the metric axis, drawn from 0 to 1.
UNIT_METRICS = frozenset({"auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv",
                          "f1", "ece", "brier", "threshold"})

#: Y-axis labels of the per-epoch facts ``fit`` logs besides metrics (each gets its own panel).
_FACT_LABELS = {"train_images_per_s": "images/s", "trainable_stages": "trainable stages"}


def _metric_name(column: str) -> str:
    """``val_auc`` -> ``auc``: the metric a history column holds."""
    prefix, _, rest = column.partition("_")
    return rest if prefix in ("train", "val", "test") and rest else column


def learning_curve_panels(names: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """``(kind, title, columns)`` of each learning-curve panel, in drawing order.

    "Loss" (``*loss`` and ``*nll``), "Metrics" (:data:`UNIT_METRICS`: one 0-1 axis),
    "Learning rate" (``lr``, ``lr_*``, ``*_lr``), then one panel per other column (images/s,
    trainable stages...), so that no series on another scale squashes the metrics. ``kind``
    is ``"loss"``, ``"metric"``, ``"lr"`` or ``"fact"`` (a panel of its own).
    """
    losses = [k for k in names if k.endswith("loss") or _metric_name(k) == "nll"]
    lrs = [k for k in names if k not in losses and (k == "lr" or k.startswith("lr_") or k.endswith("_lr"))]
    metrics = [k for k in names if k not in losses and k not in lrs and _metric_name(k) in UNIT_METRICS]
    shared = [("loss", "Loss", losses), ("metric", "Metrics", metrics), ("lr", "Learning rate", lrs)]
    facts = [k for k in names if k not in losses + lrs + metrics]
    return [panel for panel in shared if panel[2]] + [("fact", k, [k]) for k in facts]


_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_learning_curves(
    history: Sequence[Mapping[str, Any]] | str | os.PathLike,
    path: str | os.PathLike,
    title: str = "Learning curves",
) -> Path:
    """Learning curves against ``epoch``, panels as :func:`learning_curve_panels` says.

    The loss, metric (0-1) and learning-rate (log scale) panels form the first row; every
    other numeric column (e.g. ``train_images_per_s``, ``trainable_stages``) gets its own
    axis below, at most three panels a row. ``history`` is a list of rows as written by
    :class:`~medtl.train.logger.MetricLogger`, or the path of its CSV.
    """
    rows = read_history(history) if isinstance(history, (str, os.PathLike)) else list(history)
    if not rows:
        raise ValueError("history is empty: nothing to plot")
    epochs = np.array([float(r.get("epoch", i)) for i, r in enumerate(rows)])
    names: list[str] = []
    for row in rows:
        names += [k for k, v in row.items() if k not in names and k != "epoch" and _is_number(v)]
    panels = learning_curve_panels(names)
    if not panels:
        raise ValueError("history has no numeric columns besides epoch")
    shared = [p for p in panels if p[0] != "fact"]
    facts = [p for p in panels if p[0] == "fact"]
    ncols = max(len(shared), min(3, len(facts)))
    fact_rows = math.ceil(len(facts) / ncols)
    grid_rows = (1 if shared else 0) + fact_rows
    fig = Figure(figsize=(5.0 * ncols, 4.0 * grid_rows), layout="constrained")
    grid = fig.add_gridspec(grid_rows, ncols)
    cells = [grid[0, i] for i in range(len(shared))]
    cells += [grid[(1 if shared else 0) + i // ncols, i % ncols] for i in range(len(facts))]
    for cell, (kind, panel_title, keys) in zip(cells, shared + facts):
        ax = fig.add_subplot(cell)
        values = {key: np.array([_as_float(r.get(key)) for r in rows]) for key in keys}
        for i, (key, series) in enumerate(values.items()):  # tab20 and markers: 11 metrics share one panel,
            ax.plot(epochs, series, marker=_MARKERS[i % len(_MARKERS)], markersize=3,  # val_loss can equal val_nll
                    color=matplotlib.colormaps["tab20"](i % 20), linestyle="-" if i % 2 == 0 else "--", label=key)
        if kind == "lr":
            logged = np.concatenate(list(values.values()))
            if np.all(logged[~np.isnan(logged)] > 0):
                ax.set_yscale("log")
            ax.set_ylabel("learning rate")
        elif kind == "metric":
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("value")
        elif kind == "loss":
            ax.set_ylabel("loss")
        else:
            ax.set_ylabel(_FACT_LABELS.get(keys[0], keys[0]))
            series = values[keys[0]]
            if np.all(np.mod(series[~np.isnan(series)], 1) == 0):
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(panel_title)
        ax.grid(True, alpha=0.3)
        if kind != "fact":
            ax.legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _as_float(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


# --------------------------------------------------------------------------- ROC / PR


def plot_roc(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | os.PathLike,
    title: str = "ROC curve",
) -> Path:
    """ROC curves of several binary predictions on one axes, AUC and n in the legend.

    ``curves`` maps a label (e.g. "site A", "site B") to ``(y_true, p_pos)``.
    """
    if not curves:
        raise ValueError("curves is empty: give at least one label -> (y_true, p_pos)")
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label="chance", **_REFERENCE)
    for label, (y_true, p_pos) in curves.items():
        y, s = _binary_inputs(y_true, p_pos)
        if np.unique(y).size < 2:
            raise ValueError(f"curve {label!r} needs both classes in y_true to draw a ROC curve")
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, linewidth=2, label=f"{label} (AUC = {area_under_curve(fpr, tpr):.3f}, n = {y.size})")
    _square_unit_axes(ax, "1 - specificity (false positive rate)", "sensitivity (true positive rate)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_roc_multiclass(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "ROC curves (one-vs-rest)",
) -> Path:
    """One-vs-rest ROC curve of every class of one model; macro AUC in the title."""
    y, p = _prepare(y_true, probs)
    _check_names(class_names, p.shape[1])
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label="chance", **_REFERENCE)
    aucs = []
    for c, name in enumerate(class_names):
        if not 0 < np.sum(y == c) < y.size:
            continue  # undefined one-vs-rest curve: the class is absent (or alone)
        fpr, tpr, _ = roc_curve(y == c, p[:, c])
        aucs.append(area_under_curve(fpr, tpr))
        ax.plot(fpr, tpr, linewidth=2, label=f"{name} (AUC = {aucs[-1]:.3f})")
    _square_unit_axes(ax, "1 - specificity (false positive rate)", "sensitivity (true positive rate)")
    macro = f"macro AUC = {np.mean(aucs):.3f}" if len(aucs) == p.shape[1] else "macro AUC undefined (class absent)"
    ax.set_title(f"{title}\n{macro}")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def _pr_axes(curves: list[tuple[str, np.ndarray, np.ndarray]], prevalence: float | None,
             path: str | os.PathLike, title: str) -> Path:
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    if prevalence is not None:
        ax.axhline(prevalence, label=f"chance (prevalence = {prevalence:.3f})", **_REFERENCE)
    for label, y, s in curves:
        precision, recall, _ = precision_recall_curve(y, s)
        ap = average_precision_score(y, s)
        # step drawing: average precision is the area under this step function
        ax.plot(recall, precision, drawstyle="steps-post", linewidth=2, label=f"{label} (AP = {ap:.3f})")
    _square_unit_axes(ax, "recall (sensitivity)", "precision (PPV)")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_pr(
    y_true: Any,
    p_pos: Any,
    path: str | os.PathLike,
    title: str = "Precision-recall curve",
    label: str = "model",
) -> Path:
    """Precision-recall curve of p(class 1) with its average precision; the chance
    line is the prevalence."""
    y, s = _binary_inputs(y_true, p_pos)
    if not np.any(y == 1):
        raise ValueError("plot_pr needs at least one positive case")
    return _pr_axes([(label, y, s)], float(np.mean(y)), path, title)


def plot_pr_multiclass(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "Precision-recall (one-vs-rest)",
) -> Path:
    """One-vs-rest precision-recall curve of every class present in ``y_true``."""
    y, p = _prepare(y_true, probs)
    _check_names(class_names, p.shape[1])
    curves = [(name, (y == c).astype(np.int64), p[:, c])
              for c, name in enumerate(class_names) if np.any(y == c)]
    return _pr_axes(curves, None, path, title)


# --------------------------------------------------------------------------- confusion


def plot_confusion(
    cm: Any,
    class_names: Sequence[str],
    path: str | os.PathLike,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix heat map annotated with counts (rows: true class).

    ``cm`` is a ``(K, K)`` count matrix or a tuple ``(y_true, y_pred)`` of class indices.
    ``normalize=True`` colours by the fraction of each true class (row) and writes the
    percentage above the count.
    """
    k = len(class_names)
    if isinstance(cm, tuple) and len(cm) == 2:
        counts = confusion_matrix(np.asarray(cm[0]), np.asarray(cm[1]), labels=np.arange(k))
    else:
        counts = np.asarray(cm)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix must be ({k}, {k}) for {k} class names, got {counts.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        shown = counts / counts.sum(axis=1, keepdims=True) if normalize else counts.astype(np.float64)
    shown = np.nan_to_num(shown)
    size = max(4.0, 1.0 + 0.9 * k)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, shown.max()))
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "cases")
    dark = shown > (0.5 if normalize else shown.max() / 2)
    for i in range(k):
        for j in range(k):
            text = f"{shown[i, j]:.0%}\n({counts[i, j]})" if normalize else f"{counts[i, j]}"
            ax.text(j, i, text, ha="center", va="center", fontsize="medium",
                    color="white" if dark[i, j] else "black")
    ax.set_xticks(range(k), labels=list(class_names), rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title} (n = {int(counts.sum())})")
    return _save(fig, path)


# --------------------------------------------------------------------------- calibration


def plot_calibration(
    y_true: Any,
    p_pos: Any,
    path: str | os.PathLike,
    n_bins: int = 10,
    title: str = "Reliability diagram",
    xlabel: str = "predicted probability of class 1",
    ylabel: str = "observed fraction of class 1",
) -> Path:
    """Reliability diagram (observed frequency per equal-width bin vs mean predicted
    probability, bar width = bin) with the ECE over the same bins in the title, above
    a histogram of the predicted probabilities.

    For a top-label diagram of a multi-class model pass ``y_true = (argmax == truth)``
    and ``p_pos = max probability`` with matching labels (as
    :func:`save_evaluation_plots` does).
    """
    y, s = _binary_inputs(y_true, p_pos)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], s)  # (lo, hi] bins, like sklearn's calibration_curve
    count = np.bincount(bins, minlength=n_bins)
    filled = count > 0
    observed = np.bincount(bins, weights=y, minlength=n_bins)[filled] / count[filled]
    predicted = np.bincount(bins, weights=s, minlength=n_bins)[filled] / count[filled]
    ece = expected_calibration_error(y, s, n_bins=n_bins)
    fig = Figure(figsize=(5.5, 7.0), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    ax = fig.add_subplot(grid[0])
    hist = fig.add_subplot(grid[1], sharex=ax)
    centers = (edges[:-1] + edges[1:]) / 2
    ax.bar(centers[filled], observed, width=1.0 / n_bins, alpha=0.35, edgecolor="C0", label="observed per bin")
    ax.plot([0, 1], [0, 1], label="perfect calibration", **_REFERENCE)
    ax.plot(predicted, observed, marker="o", color="C1", linewidth=2, label="model")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title(f"{title}\nECE = {ece:.3f} ({n_bins} bins, n = {y.size})")
    ax.tick_params(labelbottom=False)
    hist.hist(s, bins=edges, color="C0", alpha=0.7)
    hist.set_xlabel(xlabel)
    hist.set_ylabel("cases")
    hist.grid(True, alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- all at once


def _check_names(class_names: Sequence[str], k: int) -> None:
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for {k} probability columns")


def save_evaluation_plots(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    prefix: str = "test_",
    threshold: float = 0.5,
) -> dict[str, Path]:
    """Write ROC, precision-recall, confusion and calibration PNGs to ``out_dir``.

    Returns ``{"roc", "pr", "confusion", "calibration"} -> path`` (files named
    ``<prefix>roc.png`` ...). Binary problems use p(class 1), the confusion matrix at
    ``p >= threshold`` and the p(class 1) reliability diagram; multi-class problems draw
    one-vs-rest curves, the argmax confusion matrix (``threshold`` unused) and the
    top-label reliability diagram. Cases of one class only (all normals, to check specificity) have no
    ROC or precision-recall curve: those two are left out.
    """
    y, p = _prepare(y_true, probs)
    k = p.shape[1]
    _check_names(class_names, k)
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    curves = np.unique(y).size > 1
    if k == 2:
        if curves:
            paths["roc"] = plot_roc({"model": (y, p[:, 1])}, out / f"{prefix}roc.png")
            paths["pr"] = plot_pr(y, p[:, 1], out / f"{prefix}pr.png",
                                  title=f"Precision-recall curve ({class_names[1]})")
        pred = (p[:, 1] >= threshold).astype(np.int64)
        paths["confusion"] = plot_confusion((y, pred), class_names, out / f"{prefix}confusion.png",
                                            title=f"Confusion matrix at threshold {threshold:.3g}")
        paths["calibration"] = plot_calibration(
            y, p[:, 1], out / f"{prefix}calibration.png",
            xlabel=f"predicted p({class_names[1]})", ylabel=f"observed fraction {class_names[1]}")
    else:
        if curves:
            paths["roc"] = plot_roc_multiclass(y, p, class_names, out / f"{prefix}roc.png")
            paths["pr"] = plot_pr_multiclass(y, p, class_names, out / f"{prefix}pr.png")
        paths["confusion"] = plot_confusion((y, p.argmax(axis=1)), class_names, out / f"{prefix}confusion.png")
        paths["calibration"] = plot_calibration(
            (p.argmax(axis=1) == y).astype(np.int64), p.max(axis=1), out / f"{prefix}calibration.png",
            title="Reliability diagram (top label)", xlabel="confidence (max probability)",
            ylabel="accuracy")
    return paths


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggestion: float,
                 path: str | os.PathLike) -> Path:
    """The learning-rate range test (:func:`medtl.train.lr_finder.find_lr`): smoothed loss against
    learning rate on a log axis, the suggested rate marked."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.plot(list(lrs), list(losses), color="C0")
    ax.axvline(suggestion, color="C3", linestyle="--", label=f"suggested lr {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("Learning-rate range test")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
