"""Train/validation/test splits: stratified by label, grouped by patient (scikit-learn)."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

SPLITS = ("train", "val", "test")

#: Spellings accepted in a manifest's ``split`` column.
SPLIT_ALIASES = {
    "train": "train", "training": "train", "tr": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "holdout": "test", "te": "test",
}

#: Folds used to approximate fractions when splitting by patient (5% granularity).
_GROUP_FOLDS = 20


def normalize_split(value: Any) -> str | None:
    """``"Validation"`` -> ``"val"``; empty -> ``None``; unknown -> ``ValueError``."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    if text not in SPLIT_ALIASES:
        raise ValueError(f"split {value!r} is not train, val or test")
    return SPLIT_ALIASES[text]


def _stratify_or_none(labels: Sequence[int], what: str) -> np.ndarray | None:
    counts = Counter(labels)
    if len(counts) > 1 and min(counts.values()) >= 2:
        return np.asarray(labels)
    warnings.warn(f"{what}: a class has fewer than 2 items, splitting without stratification", stacklevel=3)
    return None


def _split_off(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, taken): a stratified random ``fraction`` of ``idx`` taken out."""
    n_take = int(round(fraction * len(idx)))
    if n_take == 0 or len(idx) < 2:
        return idx, idx[:0]
    n_take = min(n_take, len(idx) - 1)
    strat = _stratify_or_none(labels[idx].tolist(), "make_splits")
    if strat is not None:
        n_classes = len(set(strat.tolist()))
        if n_take < n_classes or len(idx) - n_take < n_classes:
            strat = None
    rest, taken = train_test_split(idx, test_size=n_take, random_state=seed, stratify=strat)
    return np.sort(rest), np.sort(taken)


def make_splits(items: Sequence[dict], val_fraction: float, test_fraction: float, seed: int = 0) -> list[dict]:
    """Copies of ``items`` with ``"split"`` set to train/val/test.

    Stratified by ``"label"``. When items carry a ``"patient_id"``, all items of
    a patient land in the same split (scikit-learn ``StratifiedGroupKFold``
    with 20 folds, so fractions are met to about 5%); items without one count
    as their own patient. Without patient ids the fractions are exact
    (``train_test_split``, stratified).
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be >= 0 and sum below 1")
    out = [dict(it) for it in items]
    if not out:
        return out
    labels = np.asarray([int(it["label"]) for it in out])
    if any(it.get("patient_id") not in (None, "") for it in out):
        groups = [str(it["patient_id"]) if it.get("patient_id") not in (None, "") else f"\0item{i}"
                  for i, it in enumerate(out)]
        assign = _grouped_assign(labels, groups, val_fraction, test_fraction, seed)
    else:
        idx = np.arange(len(out))
        rest, test = _split_off(idx, labels, test_fraction, seed)
        val_rel = val_fraction / (1.0 - test_fraction) if test_fraction < 1 else 0.0
        train, val = _split_off(rest, labels, val_rel, seed + 1)
        assign = np.empty(len(out), dtype=object)
        assign[train], assign[val], assign[test] = "train", "val", "test"
    for it, s in zip(out, assign):
        it["split"] = str(s)
    return out


def _grouped_assign(labels: np.ndarray, groups: list[str], val_fraction: float, test_fraction: float,
                    seed: int) -> np.ndarray:
    n_groups = len(set(groups))
    counts = Counter(labels.tolist())
    # StratifiedGroupKFold refuses more folds than the largest class has items (36 one-image patients
    # in two classes: 18 each, not 20 folds)
    n_folds = max(2, min(_GROUP_FOLDS, n_groups, max(counts.values())))
    if min(counts.values()) < n_folds:
        warnings.warn(f"make_splits: a class has fewer items than the {n_folds} folds used to split by patient; "
                      "stratification is approximate", stacklevel=3)
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the least-populated-class warning, reported above
        folds = [test for _, test in cv.split(np.zeros(len(labels)), labels, groups)]
    n_test = int(round(test_fraction * n_folds))
    n_val = int(round(val_fraction * n_folds))
    if test_fraction > 0:
        n_test = max(1, n_test)
    if val_fraction > 0:
        n_val = max(1, n_val)
    if n_test + n_val >= n_folds:
        raise ValueError(f"too few patients ({n_groups}) for val_fraction={val_fraction}, "
                         f"test_fraction={test_fraction}")
    assign = np.full(len(labels), "train", dtype=object)
    for f in folds[:n_test]:
        assign[f] = "test"
    for f in folds[n_test:n_test + n_val]:
        assign[f] = "val"
    return assign


def subsample(items: Sequence[dict], fraction: float = 1.0, seed: int = 0, *, size: int | None = None,
              max_per_class: int | None = None) -> list[dict]:
    """A stratified, seeded subset of ``items`` in their original order (at least one per class).

    ``fraction`` keeps that share, ``size`` that many items (for learning curves at fixed
    cohort sizes); ``max_per_class`` then caps every class at that many. The same seed
    gives the same subset, and a smaller ``size`` is not a subset of a larger one.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if size is not None and size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be at least 1, got {max_per_class}")
    items = list(items)
    if len(items) < 2:
        return items
    labels = np.asarray([int(it["label"]) for it in items])
    n_classes = len(set(labels.tolist()))
    keep = np.arange(len(items))
    n_keep = int(round(fraction * len(items))) if size is None else min(size, len(items))
    n_keep = max(n_classes, n_keep)
    if n_keep < len(items):
        strat = _stratify_or_none(labels.tolist(), "subsample")
        if strat is not None and len(items) - n_keep < n_classes:
            strat = None
        keep, _ = train_test_split(keep, train_size=n_keep, random_state=seed, stratify=strat)
    if max_per_class is not None:
        rng = np.random.default_rng(seed)
        capped = []
        for c in np.unique(labels[keep]):
            members = keep[labels[keep] == c]
            capped.append(members if len(members) <= max_per_class
                          else rng.choice(members, size=max_per_class, replace=False))
        keep = np.concatenate(capped)
    return [items[i] for i in sorted(keep.tolist())]
