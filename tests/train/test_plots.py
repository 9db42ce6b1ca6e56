"""Every plot writes a readable, non-blank PNG atomically and returns its path."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

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


def test_learning_curves_from_rows_and_from_csv(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    with MetricLogger(csv_path) as log:
        for epoch in range(6):
            log.log(epoch, train_loss=1 / (epoch + 1), val_loss=1.2 / (epoch + 1), val_auc=0.6 + 0.05 * epoch,
                    lr=1e-3 * 0.5 ** epoch)
    out = plots.plot_learning_curves(csv_path, tmp_path / "curves.png")
    image = check_png(out)
    assert image.shape[1] > 2 * image.shape[0]  # three panels side by side
    rows = [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5, "val_auc": 0.7}]
    check_png(plots.plot_learning_curves(rows, tmp_path / "rows.png"))
    with pytest.raises(ValueError, match="empty"):
        plots.plot_learning_curves([], tmp_path / "none.png")


def test_roc_several_curves(tmp_path, binary_cases):
    y, p = binary_cases
    shifted = np.clip(p + np.random.default_rng(2).normal(0, 0.25, p.size), 0, 1)
    out = plots.plot_roc({"site A": (y, p), "site B": (y, shifted)}, tmp_path / "roc.png", title="A vs B")
    assert out == tmp_path / "roc.png"
    check_png(out)
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


def test_confusion_from_matrix_or_labels(tmp_path):
    cm = np.array([[50, 3, 2], [4, 40, 6], [0, 5, 45]])
    check_png(plots.plot_confusion(cm, ["a", "b", "c"], tmp_path / "cm.png", normalize=True))
    y = np.array([0, 0, 1, 1, 1])
    check_png(plots.plot_confusion((y, np.array([0, 1, 1, 1, 0])), ["neg", "pos"], tmp_path / "pair.png"))


def test_save_evaluation_plots_binary_and_multiclass(tmp_path, binary_cases, multiclass_cases):
    y, p = binary_cases
    paths = plots.save_evaluation_plots(y, np.stack([1 - p, p], 1), ["normal", "abnormal"], tmp_path,
                                        threshold=0.4)
    assert check_png(paths["calibration"]).shape[0] > check_png(paths["roc"]).shape[0]  # + histogram
    assert set(paths) == {"roc", "pr", "confusion", "calibration"}
    assert {q.name for q in paths.values()} == {"test_roc.png", "test_pr.png", "test_confusion.png",
                                                "test_calibration.png"}
    for path in paths.values():
        check_png(path)
    y, probs = multiclass_cases
    paths = plots.save_evaluation_plots(y, probs, ["a", "b", "c"], tmp_path / "mc", prefix="val_")
    assert sorted(q.name for q in paths.values()) == ["val_calibration.png", "val_confusion.png",
                                                      "val_pr.png", "val_roc.png"]
    for path in paths.values():
        check_png(path)
