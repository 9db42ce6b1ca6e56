"""Every plot writes a readable, non-blank PNG atomically and returns its path, and draws the right data.

The drawn data is read back from the figure each function saves (``drawn`` keeps it from
being cleared) and checked against scikit-learn computed here, not against medtl's code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from medtl.train import plots
from medtl.train.logger import MetricLogger


def check_png(path, min_side: int = 300) -> np.ndarray:
    """Read the PNG back; assert sane size, not blank, and no temp file left beside it."""
    assert path.is_file() and path.suffix == ".png"
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert min(image.shape[:2]) >= min_side and max(image.shape[:2]) <= 3000
    rgb = image[..., :3]
    assert rgb.std() > 0.05  # drawn, not a uniform background
    assert np.mean(rgb.min(axis=2) < 0.5) > 0.005  # some dark ink: lines, text
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    return image


@pytest.fixture
def drawn(monkeypatch):
    """``{file name: Figure}`` of every PNG written, still drawn (``_save`` clears figures after writing)."""
    figures = {}
    real = plots._save

    def keep(fig, path):
        fig.clear = lambda *args, **kwargs: None
        figures[Path(path).name] = fig
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def lines(ax) -> dict:
    """The axes' lines by legend label up to " (" (the label's figures stay in the full label)."""
    return {line.get_label().split(" (")[0]: line for line in ax.get_lines()}


def cell_texts(ax) -> dict:
    """``{(row, column): text}`` of the annotations of a confusion matrix."""
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}


@pytest.fixture(scope="module")
def binary_cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, p


@pytest.fixture(scope="module")
def multiclass_cases():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3))
    logits[np.arange(150), y] += 1.5
    e = np.exp(logits)
    return y, e / e.sum(axis=1, keepdims=True)


def test_learning_curves_from_rows_and_from_csv(tmp_path, drawn):
    csv_path = tmp_path / "metrics.csv"
    with MetricLogger(csv_path) as log:
        for epoch in range(6):
            log.log(epoch, train_loss=1 / (epoch + 1), val_loss=1.2 / (epoch + 1), val_auc=0.6 + 0.05 * epoch,
                    lr=1e-3 * 0.5 ** epoch)
    out = plots.plot_learning_curves(csv_path, tmp_path / "curves.png")
    image = check_png(out)
    assert image.shape[1] > 2 * image.shape[0]  # three panels side by side
    loss, metric, lr = drawn["curves.png"].axes
    assert [ax.get_title() for ax in (loss, metric, lr)] == ["Loss", "Metrics", "Learning rate"]
    np.testing.assert_allclose(lines(loss)["val_loss"].get_ydata(), [1.2 / (e + 1) for e in range(6)])
    np.testing.assert_allclose(lines(metric)["val_auc"].get_ydata(), [0.6 + 0.05 * e for e in range(6)])
    np.testing.assert_array_equal(lines(metric)["val_auc"].get_xdata(), range(6))
    assert lr.get_yscale() == "log"
    rows = [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5, "val_auc": 0.7}]
    check_png(plots.plot_learning_curves(rows, tmp_path / "rows.png"))
    loss, metric = drawn["rows.png"].axes
    np.testing.assert_array_equal(lines(metric)["val_auc"].get_ydata(), [np.nan, 0.7])
    with pytest.raises(ValueError, match="empty"):
        plots.plot_learning_curves([], tmp_path / "none.png")


def test_learning_curves_keep_other_scales_off_the_metric_axis(tmp_path, drawn):
    """A history as ``fit`` writes it: images/s (hundreds) and trainable stages (counts) get their own axes."""
    rows = [{"epoch": e + 1, "train_loss": 0.7 - 0.1 * e, "lr": 1e-3, "train_images_per_s": 300.0 + 10 * e,
             "trainable_stages": 1 + e, "val_loss": 0.8 - 0.1 * e, "val_auc": 0.6 + 0.1 * e, "val_nll": 0.8 - 0.1 * e,
             "val_ece": 0.1, "val_threshold": 0.5} for e in range(3)]
    check_png(plots.plot_learning_curves(rows, tmp_path / "fit.png"))
    axes = {ax.get_title(): ax for ax in drawn["fit.png"].axes}
    assert list(axes) == ["Loss", "Metrics", "Learning rate", "train_images_per_s", "trainable_stages"]
    assert set(lines(axes["Metrics"])) == {"val_auc", "val_ece", "val_threshold"}
    assert axes["Metrics"].get_ylim() == pytest.approx((-0.02, 1.02))
    assert set(lines(axes["Loss"])) == {"train_loss", "val_loss", "val_nll"}
    speed, stages = axes["train_images_per_s"], axes["trainable_stages"]
    assert [line.get_label() for line in speed.get_lines()] == ["train_images_per_s"]
    np.testing.assert_array_equal(speed.get_lines()[0].get_ydata(), [300.0, 310.0, 320.0])
    assert speed.get_ylabel() == "images/s" and speed.get_ylim()[1] > 300
    np.testing.assert_array_equal(stages.get_lines()[0].get_ydata(), [1, 2, 3])
    assert all(float(t).is_integer() for t in stages.get_yticks())
    assert speed.get_subplotspec().rowspan.start == 1  # below the row of loss, metrics and learning rate


def test_roc_several_curves(tmp_path, binary_cases, drawn):
    y, p = binary_cases
    shifted = np.clip(p + np.random.default_rng(2).normal(0, 0.25, p.size), 0, 1)
    out = plots.plot_roc({"site A": (y, p), "site B": (y, shifted)}, tmp_path / "roc.png", title="A vs B")
    assert out == tmp_path / "roc.png"
    check_png(out)
    ax = drawn["roc.png"].axes[0]
    curves = lines(ax)
    assert set(curves) == {"chance", "site A", "site B"} and ax.get_title() == "A vs B"
    for label, scores in (("site A", p), ("site B", shifted)):
        fpr, tpr, _ = roc_curve(y, scores)
        np.testing.assert_array_equal(curves[label].get_xdata(), fpr)
        np.testing.assert_array_equal(curves[label].get_ydata(), tpr)
        assert curves[label].get_label() == f"{label} (AUC = {roc_auc_score(y, scores):.3f}, n = 200)"
    with pytest.raises(ValueError, match="both classes"):
        plots.plot_roc({"x": (np.zeros(5, int), np.linspace(0, 1, 5))}, tmp_path / "bad.png")


def test_inputs_are_checked_before_drawing(tmp_path, multiclass_cases):
    y, probs = multiclass_cases
    with pytest.raises(ValueError, match="class names"):
        plots.plot_roc_multiclass(y, probs, ["a", "b"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        plots.plot_confusion(np.eye(3), ["neg", "pos"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="positive"):
        plots.plot_pr(np.zeros(4, int), np.linspace(0, 1, 4), tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())


def test_confusion_from_matrix_or_labels(tmp_path, drawn):
    cm = np.array([[50, 3, 2], [4, 40, 6], [0, 5, 45]])
    check_png(plots.plot_confusion(cm, ["a", "b", "c"], tmp_path / "cm.png", normalize=True))
    ax = drawn["cm.png"].axes[0]
    fractions = cm / cm.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ax.images[0].get_array(), fractions)
    assert cell_texts(ax) == {(i, j): f"{fractions[i, j]:.0%}\n({cm[i, j]})" for i in range(3) for j in range(3)}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"] and ax.get_title().endswith("(n = 155)")
    y, pred = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])
    check_png(plots.plot_confusion((y, pred), ["neg", "pos"], tmp_path / "pair.png"))
    # rows are the true class: 1 of 2 negatives and 2 of 3 positives right
    assert cell_texts(drawn["pair.png"].axes[0]) == {(0, 0): "1", (0, 1): "1", (1, 0): "1", (1, 1): "2"}


def test_calibration_bars_are_the_observed_fraction_per_bin(tmp_path, binary_cases, drawn):
    y, p = binary_cases
    check_png(plots.plot_calibration(y, p, tmp_path / "cal.png", n_bins=10))
    diagram, hist = drawn["cal.png"].axes
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.histogram(p, bins=np.linspace(0, 1, 11))[0]
    filled = counts > 0
    bars = diagram.patches
    np.testing.assert_allclose([b.get_height() for b in bars], observed)
    np.testing.assert_allclose([b.get_x() + b.get_width() / 2 for b in bars], (np.arange(10) + 0.5)[filled] / 10)
    model = lines(diagram)["model"]
    np.testing.assert_allclose(model.get_xdata(), predicted)
    np.testing.assert_allclose(model.get_ydata(), observed)
    np.testing.assert_array_equal([b.get_height() for b in hist.patches], counts)
    ece = np.sum(counts[filled] / y.size * np.abs(observed - predicted))
    assert f"ECE = {ece:.3f} (10 bins, n = 200)" in diagram.get_title()


def test_pr_and_multiclass_curves_are_sklearns(tmp_path, binary_cases, multiclass_cases, drawn):
    y, p = binary_cases
    check_png(plots.plot_pr(y, p, tmp_path / "pr.png"))
    curves = lines(drawn["pr.png"].axes[0])
    precision, recall, _ = precision_recall_curve(y, p)
    np.testing.assert_array_equal(curves["model"].get_xdata(), recall)
    np.testing.assert_array_equal(curves["model"].get_ydata(), precision)
    assert curves["model"].get_label() == f"model (AP = {average_precision_score(y, p):.3f})"
    np.testing.assert_allclose(curves["chance"].get_ydata(), [y.mean()] * 2)
    y, probs = multiclass_cases
    check_png(plots.plot_roc_multiclass(y, probs, ["a", "b", "c"], tmp_path / "roc3.png"))
    ax = drawn["roc3.png"].axes[0]
    curves = lines(ax)
    for c, name in enumerate("abc"):
        fpr, tpr, _ = roc_curve(y == c, probs[:, c])
        np.testing.assert_array_equal(curves[name].get_xdata(), fpr)
        np.testing.assert_array_equal(curves[name].get_ydata(), tpr)
    assert f"macro AUC = {roc_auc_score(y, probs, multi_class='ovr'):.3f}" in ax.get_title()


def test_save_evaluation_plots_binary_and_multiclass(tmp_path, binary_cases, multiclass_cases, drawn):
    y, p = binary_cases
    paths = plots.save_evaluation_plots(y, np.stack([1 - p, p], 1), ["normal", "abnormal"], tmp_path,
                                        threshold=0.4)
    assert check_png(paths["calibration"]).shape[0] > check_png(paths["roc"]).shape[0]  # + histogram
    assert set(paths) == {"roc", "pr", "confusion", "calibration"}
    assert {q.name for q in paths.values()} == {"test_roc.png", "test_pr.png", "test_confusion.png",
                                                "test_calibration.png"}
    for path in paths.values():
        check_png(path)
    cm = confusion_matrix(y, (p >= 0.4).astype(int))  # the given threshold, p >= t is positive
    expected = {(i, j): str(cm[i, j]) for i in range(2) for j in range(2)}
    assert cell_texts(drawn["test_confusion.png"].axes[0]) == expected
    fpr, tpr, _ = roc_curve(y, p)
    np.testing.assert_array_equal(lines(drawn["test_roc.png"].axes[0])["model"].get_ydata(), tpr)
    y, probs = multiclass_cases
    paths = plots.save_evaluation_plots(y, probs, ["a", "b", "c"], tmp_path / "mc", prefix="val_")
    assert sorted(q.name for q in paths.values()) == ["val_calibration.png", "val_confusion.png",
                                                      "val_pr.png", "val_roc.png"]
    for path in paths.values():
        check_png(path)
    cm = confusion_matrix(y, probs.argmax(1))
    assert cell_texts(drawn["val_confusion.png"].axes[0]) == {(i, j): str(cm[i, j]) for i in range(3) for j in range(3)}
    top = lines(drawn["val_calibration.png"].axes[0])["model"]  # top label: confidence vs accuracy
    accuracy, confidence = calibration_curve(probs.argmax(1) == y, probs.max(1), n_bins=10)
    np.testing.assert_allclose(top.get_xdata(), confidence)
    np.testing.assert_allclose(top.get_ydata(), accuracy)


def test_cases_of_one_class_get_no_roc_or_pr_curve_but_the_other_plots(tmp_path):
    """All normals (a specificity check) have no ROC: evaluate crashed drawing one after writing its metrics."""
    y = np.zeros(20, dtype=int)
    p = np.column_stack([np.linspace(0.9, 0.2, 20), np.linspace(0.1, 0.8, 20)])
    paths = plots.save_evaluation_plots(y, p, ["normal", "pneumonia"], tmp_path)
    assert set(paths) == {"confusion", "calibration"} and all(v.is_file() for v in paths.values())


def test_every_learning_curve_of_a_panel_is_drawn_in_its_own_style(tmp_path, monkeypatch):
    """With 11 metrics in one panel the colour cycle repeated (val_auc and val_threshold alike)."""
    from matplotlib.axes import Axes

    drawn = []
    original = Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append((kwargs.get("label"), kwargs.get("color"), kwargs.get("linestyle"), kwargs.get("marker")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    metrics = ["auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "ece",
               "brier", "threshold"]
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 0.9 / e, "val_nll": 0.9 / e,
             **{f"val_{m}": 0.5 + 0.01 * e for m in metrics}} for e in range(1, 4)]
    plots.plot_learning_curves(rows, tmp_path / "curves.png")
    styles = [style for label, *style in drawn if label and label.startswith("val_") and label[4:] in metrics]
    assert len(styles) == 11 and len({tuple(map(str, s)) for s in styles}) == 11
    loss = {label: style for label, *style in drawn if label in ("val_loss", "val_nll")}
    assert loss["val_loss"] != loss["val_nll"]
