from collections import Counter, defaultdict

import pytest

from medtl.data import make_splits, subsample


def _items(n=400, patients=True):
    out = []
    for i in range(n):
        it = {"image": f"{i}.png", "label": 1 if i % 4 == 0 else 0}
        if patients:
            it["patient_id"] = f"p{i // 4 if i % 8 < 4 else i // 2}"  # patients with 4, 2 or mixed images
        out.append(it)
    return out


def test_grouped_split_keeps_each_patient_in_one_split_and_stratifies():
    items = _items()
    split = make_splits(items, 0.15, 0.2, seed=3)
    assert [it["image"] for it in split] == [it["image"] for it in items] and "split" not in items[0]
    where = defaultdict(set)
    for it in split:
        where[it["patient_id"]].add(it["split"])
    assert all(len(s) == 1 for s in where.values())
    n = Counter(it["split"] for it in split)
    assert abs(n["test"] / len(items) - 0.2) < 0.05 and abs(n["val"] / len(items) - 0.15) < 0.05
    overall = sum(it["label"] for it in items) / len(items)
    for s in ("train", "val", "test"):
        labels = [it["label"] for it in split if it["split"] == s]
        assert abs(sum(labels) / len(labels) - overall) < 0.08
    again = make_splits(items, 0.15, 0.2, seed=3)
    assert [it["split"] for it in again] == [it["split"] for it in split]


@pytest.mark.parametrize("n", [6, 12, 36])
def test_a_small_cohort_of_one_image_per_patient_splits_by_patient(n):
    """Fewer items per class than the 20 folds made StratifiedGroupKFold refuse (36 images, 18 per class)."""
    items = [{"image": f"{i}.png", "label": i % 2, "patient_id": f"P{i}"} for i in range(n)]
    split = make_splits(items, 0.15, 0.15, seed=0)
    n_split = Counter(it["split"] for it in split)
    assert set(n_split) == {"train", "val", "test"} and n_split["train"] >= n_split["test"]
    for s in ("train", "val", "test"):  # both classes everywhere
        assert {it["label"] for it in split if it["split"] == s} == {0, 1}


def test_ungrouped_split_has_exact_stratified_fractions():
    items = _items(200, patients=False)
    split = make_splits(items, 0.1, 0.2, seed=0)
    n = Counter(it["split"] for it in split)
    assert (n["train"], n["val"], n["test"]) == (140, 20, 40)
    assert Counter(it["label"] for it in split if it["split"] == "test") == {0: 30, 1: 10}
    assert {it["split"] for it in make_splits(items, 0.0, 0.3)} == {"train", "test"}
    with pytest.raises(ValueError):
        make_splits(items, 0.5, 0.5)


def test_subsample_is_stratified_and_ordered():
    items = _items(200, patients=False)
    sub = subsample(items, 0.1, seed=1)
    assert len(sub) == 20 and Counter(it["label"] for it in sub) == {0: 15, 1: 5}
    pos = [items.index(it) for it in sub]
    assert pos == sorted(pos)
    assert subsample(items, 1.0) == items
    assert {it["label"] for it in subsample(items, 0.001)} == {0, 1}  # at least one per class
    assert [it["image"] for it in subsample(items, 0.1, seed=1)] == [it["image"] for it in sub]


def test_subsample_by_size_and_per_class_cap():
    items = _items(200, patients=False)  # 150 of class 0, 50 of class 1
    sized = subsample(items, size=40, seed=2)
    assert len(sized) == 40 and Counter(it["label"] for it in sized) == {0: 30, 1: 10}
    assert [it["image"] for it in subsample(items, size=40, seed=2)] == [it["image"] for it in sized]
    assert [it["image"] for it in subsample(items, size=40, seed=3)] != [it["image"] for it in sized]
    capped = subsample(items, max_per_class=20, seed=0)
    assert Counter(it["label"] for it in capped) == {0: 20, 1: 20}
    both = subsample(items, size=100, max_per_class=30, seed=0)
    assert Counter(it["label"] for it in both) == {0: 30, 1: 25}
    pos = [items.index(it) for it in both]
    assert pos == sorted(pos)
    assert subsample(items, size=10_000) == items
    with pytest.raises(ValueError):
        subsample(items, size=0)
    with pytest.raises(ValueError):
        subsample(items, max_per_class=0)
