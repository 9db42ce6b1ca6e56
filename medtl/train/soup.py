"""A greedy model soup over a run's epochs (``train.soup``): weights of its best validation epochs
averaged, each one joining only when validation does not drop (Wortsman et al. 2022, recipe 1).

Written here because the paper's code averages whole fine-tuned models from separate runs; this one
keeps the ``k`` best epochs of one run (equal weights, BatchNorm statistics averaged like the weights,
as torch's ``AveragedModel(use_buffers=True)`` does) so the soup costs no extra training.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Weights = dict[str, torch.Tensor]


def average_weights(members: list[Weights]) -> Weights:
    """The element-wise mean of state dicts; integer entries (BatchNorm's batch count) from the first."""
    out: Weights = {}
    for k, v in members[0].items():
        out[k] = torch.stack([m[k] for m in members]).mean(0) if v.is_floating_point() else v.clone()
    return out


def keep_best(pool: list[dict], epoch: int, score: float, weights: Weights, k: int,
              higher_is_better: bool = True) -> list[dict]:
    """``pool`` (best first) with this epoch added when it is among the ``k`` best; a NaN score is not kept."""
    if score is None or math.isnan(score):
        return pool
    sign = -1.0 if higher_is_better else 1.0
    if len(pool) >= k and sign * score >= sign * pool[-1]["score"]:  # not kept: no copy of the weights
        return pool
    entry = {"epoch": epoch, "score": float(score), "weights": {n: t.detach().cpu().clone() for n, t in weights.items()}}
    return sorted([*pool, entry], key=lambda e: (sign * e["score"], e["epoch"]))[:k]


def greedy_soup(pool: list[dict], score_of: Callable[[Weights], float],
                higher_is_better: bool = True) -> tuple[Weights, list[int], float]:
    """From the best epoch of ``pool`` (best first) down, add each one whose addition does not lower
    ``score_of`` the average. Returns the soup's weights, its epochs and its score."""
    if not pool:
        raise ValueError("no epoch to make a soup of (no validation score was kept)")
    members = [pool[0]]
    soup = average_weights([pool[0]["weights"]])
    best = score_of(soup)
    for cand in pool[1:]:
        trial = average_weights([m["weights"] for m in members] + [cand["weights"]])
        score = score_of(trial)
        if not math.isnan(score) and (score >= best if higher_is_better else score <= best):
            members, soup, best = [*members, cand], trial, score
    return soup, [m["epoch"] for m in members], best
