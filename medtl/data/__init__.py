"""Cohorts (manifest CSV, class folders, MedMNIST .npz), splits and MONAI datasets.

    cohort = load_items(cfg.data)                      # items + class names, split
    prep = Preprocessing.from_config(cfg.preprocess)
    train_ds = build_dataset(cohort.split("train"), prep.transforms(cfg.augment), cache="memory")
"""

from medtl.data.datasets import (
    balanced_sampler,
    balanced_weights,
    build_dataset,
    cache_workers,
    class_counts,
    class_weights,
    weighted_sampler,
)
from medtl.data.sources import (
    MEDMNIST_CLASSES,
    Cohort,
    apply_filter,
    detect_data_format,
    load_folder,
    load_items,
    load_manifest,
    load_medmnist,
)
from medtl.data.splits import SPLITS, make_splits, normalize_split, subsample

__all__ = [
    "MEDMNIST_CLASSES", "SPLITS", "Cohort", "apply_filter", "balanced_sampler", "balanced_weights", "build_dataset",
    "cache_workers", "class_counts", "class_weights", "detect_data_format", "load_folder", "load_items",
    "load_manifest", "load_medmnist", "make_splits", "normalize_split", "subsample", "weighted_sampler",
]
