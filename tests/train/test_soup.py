"""The greedy soup's pieces, exactly: averaging, keeping the k best epochs, the greedy choice."""

from __future__ import annotations

import math

import pytest
import torch

from medtl.train.soup import average_weights, greedy_soup, keep_best


def test_average_weights_is_the_elementwise_mean_and_keeps_integer_counts_from_the_first():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}
    out = average_weights([a, b])
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 4.0]))
    assert out["n"].item() == 3 and out["n"].dtype == a["n"].dtype


@pytest.mark.parametrize("higher, expected", [(True, [2, 4]), (False, [3, 1])])
def test_keep_best_keeps_the_k_best_scores_best_first_and_skips_nan(higher, expected):
    pool: list[dict] = []
    for epoch, score in enumerate([0.5, 0.9, 0.1, 0.7, math.nan], start=1):
        pool = keep_best(pool, epoch, score, {"w": torch.tensor([float(epoch)])}, k=2, higher_is_better=higher)
    assert [e["epoch"] for e in pool] == expected
    assert [e["weights"]["w"].item() for e in pool] == [float(e) for e in expected]


def test_keep_best_copies_the_weights():
    w = {"w": torch.tensor([1.0])}
    pool = keep_best([], 1, 0.5, w, k=1)
    w["w"].add_(5)
    assert pool[0]["weights"]["w"].item() == 1.0


def test_greedy_soup_adds_an_epoch_only_when_the_average_scores_no_lower():
    # score: -(w - 1)^2, best at w = 1; the pool is ranked by its own scores (best first)
    pool = [{"epoch": e, "score": -(w - 1) ** 2, "weights": {"w": torch.tensor([w])}}
            for e, w in ((7, 1.5), (3, 0.4), (9, 3.0))]
    seen = []

    def score_of(weights):
        seen.append(weights["w"].item())
        return -(weights["w"].item() - 1) ** 2

    soup, epochs, score = greedy_soup(pool, score_of)
    assert epochs == [7, 3]  # 1.5 and 0.4 average to 0.95 (better); adding 3.0 gives 1.63 (worse)
    assert soup["w"].item() == pytest.approx(0.95) and score == pytest.approx(-0.0025)
    assert seen == pytest.approx([1.5, 0.95, (1.5 + 0.4 + 3.0) / 3])


def test_greedy_soup_lower_is_better_and_an_empty_pool_says_so():
    pool = [{"epoch": 1, "score": 0.2, "weights": {"w": torch.tensor([2.0])}},
            {"epoch": 2, "score": 0.3, "weights": {"w": torch.tensor([0.0])}}]
    _, epochs, score = greedy_soup(pool, lambda w: abs(w["w"].item() - 1.0), higher_is_better=False)
    assert epochs == [1, 2] and score == 0.0
    with pytest.raises(ValueError, match="no epoch"):
        greedy_soup([], lambda w: 0.0)
