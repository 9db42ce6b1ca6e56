"""Cohorts (manifest CSV, class folders, MedMNIST .npz), splits and MONAI datasets.

    cohort = load_items(cfg.data)                      # items + class names, split
    prep = Preprocessing.from_config(cfg.preprocess)
    train_ds = build_dataset(cohort.split("train"), prep.transforms(cfg.augment), cache="memory")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medtl._lazy import lazy_getattr

# The names load on first use (PEP 562), as in medtl.models: the config schema imports
# medtl.data.config, and `medtl configs --reference` or load_config must not pay for torch,
# MONAI and scikit-learn, which the datasets and splits need.
_WHERE = {
    "balanced_sampler": "datasets", "balanced_weights": "datasets", "build_dataset": "datasets",
    "cache_workers": "datasets", "class_counts": "datasets", "class_weights": "datasets",
    "weighted_sampler": "datasets",
    "MEDMNIST_CLASSES": "sources", "Cohort": "sources", "apply_filter": "sources", "detect_data_format": "sources",
    "load_folder": "sources", "load_items": "sources", "load_manifest": "sources", "load_medmnist": "sources",
    "SPLITS": "splits", "make_splits": "splits", "normalize_split": "splits", "subsample": "splits",
}

if TYPE_CHECKING:
    from .datasets import (
        balanced_sampler,
        balanced_weights,
        build_dataset,
        cache_workers,
        class_counts,
        class_weights,
        weighted_sampler,
    )
    from .sources import (
        MEDMNIST_CLASSES,
        Cohort,
        apply_filter,
        detect_data_format,
        load_folder,
        load_items,
        load_manifest,
        load_medmnist,
    )
    from .splits import SPLITS, make_splits, normalize_split, subsample


__getattr__ = lazy_getattr(__name__, _WHERE)

__all__ = [
    "MEDMNIST_CLASSES", "SPLITS", "Cohort", "apply_filter", "balanced_sampler", "balanced_weights", "build_dataset",
    "cache_workers", "class_counts", "class_weights", "detect_data_format", "load_folder", "load_items",
    "load_manifest", "load_medmnist", "make_splits", "normalize_split", "subsample", "weighted_sampler",
]
