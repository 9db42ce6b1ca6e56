import numpy as np
import pytest
import torch

from medtl.guard import ood


def _two_blobs(rng, n=300, d=16, shift=3.0):
    y = rng.integers(0, 2, n)
    f = rng.normal(size=(n, d)) + shift * y[:, None] * np.eye(d)[0]
    return f, y


def test_logit_scores_match_their_definitions():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    s = ood.logit_scores(logits)
    t = torch.tensor(logits)
    np.testing.assert_allclose(s["msp"], 1 - torch.softmax(t, 1).max(1).values.numpy(), atol=1e-12)
    np.testing.assert_allclose(s["energy"], -torch.logsumexp(t, 1).numpy(), atol=1e-12)
    assert s["msp"][1] == pytest.approx(2 / 3)


def test_mahalanobis_is_the_distance_to_the_nearest_class_mean_under_the_shrunk_covariance():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    f, y = _two_blobs(rng)
    det = ood.fit(f, y)
    means = np.stack([f[y == c].mean(0) for c in (0, 1)])
    prec = LedoitWolf(assume_centered=True).fit(f - means[y]).precision_
    x = rng.normal(size=(5, f.shape[1]))
    expected = np.min([np.einsum("nd,de,ne->n", x - m, prec, x - m) for m in means], axis=0)
    np.testing.assert_allclose(det.scores(x, np.zeros((5, 2)))["mahalanobis"], expected, rtol=1e-9)
    at_mean = det.scores(means, np.zeros((2, 2)))["mahalanobis"]
    np.testing.assert_allclose(at_mean, 0.0, atol=1e-9)


def test_knn_distance_is_zero_for_a_bank_member_with_k1_and_grows_away_from_the_data():
    rng = np.random.default_rng(1)
    f, y = _two_blobs(rng, n=50)
    det = ood.fit(f, y)
    det.k = 1
    s = det.scores(f[:3], np.zeros((3, 2)))["knn"]
    np.testing.assert_allclose(s, 0.0, atol=1e-3)  # bank is float32, normalised
    far = det.scores(-f[:3] * 10, np.zeros((3, 2)))["knn"]
    assert (far > 0.5).all()


def test_calibration_flags_the_chosen_share_of_in_distribution_and_far_points():
    rng = np.random.default_rng(2)
    f, y = _two_blobs(rng, n=600)
    f = f + 4.0  # features of a ReLU network sit in one orthant, so their directions are informative
    det = ood.fit(f[:400], y[:400])
    val_logits = rng.normal(size=(200, 2))
    det.calibrate(f[400:], val_logits, quantile=0.95)
    for m in ood.METHODS:
        flagged = det.flags(det.scores(f[400:], val_logits), m)
        assert 9 <= flagged.sum() <= 11, m  # 5 % of 200, up to ties at the quantile
    far = -(rng.normal(size=(50, f.shape[1])) + 4.0)
    scores = det.scores(far, np.zeros((50, 2)))
    assert det.flags(scores, "mahalanobis").all() and det.flags(scores, "knn").all()


def test_save_and_load_give_the_same_scores(tmp_path):
    rng = np.random.default_rng(3)
    f, y = _two_blobs(rng, n=120)
    det = ood.fit(f, y)
    det.calibrate(f[:40], rng.normal(size=(40, 2)))
    det.save(tmp_path / "ood.safetensors")
    back = ood.OODDetector.load(tmp_path / "ood.safetensors", det.card_entry())
    x, lg = rng.normal(size=(7, f.shape[1])), rng.normal(size=(7, 2))
    a, b = det.scores(x, lg), back.scores(x, lg)
    np.testing.assert_allclose(b["mahalanobis"], a["mahalanobis"], rtol=1e-4)
    np.testing.assert_allclose(b["knn"], a["knn"], atol=2e-3)  # bank stored as float16
    assert back.thresholds == det.thresholds and back.k == det.k
    assert det.card_entry()["n_calibration"] == back.n_calibration == 40  # how many images the quantile is over


def test_bad_shapes_are_clear_errors():
    det = ood.fit(np.random.default_rng(0).normal(size=(10, 4)), np.array([0, 1] * 5))
    with pytest.raises(ValueError, match=r"features must be \(N, 4\)"):
        det.scores(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="calibrate first"):
        det.flags({"knn": np.zeros(2)}, "knn")
