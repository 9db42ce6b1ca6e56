"""MONAI datasets over cohort items, class balancing helpers."""

from __future__ import annotations

import logging
import os
import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import SUPPORTED_PICKLE_MOD, json_hashing
from monai.transforms import Compose, RandomizableTrait, Transform
from monai.utils import convert_to_tensor, look_up_option
from torch.utils.data import WeightedRandomSampler

from medtl._fileutil import atomic_path

log = logging.getLogger(__name__)


def cache_workers() -> int:
    """Threads that fill a memory cache when the config says auto (-1): up to 4, never more than the CPUs.

    Not the training loader's workers (:func:`medtl.train.engine.loader_workers`): caching
    runs once, before training, so it may use cores the model needs later.
    """
    return max(1, min(4, os.cpu_count() or 1))


class _AtomicPersistentDataset(PersistentDataset):
    """MONAI's ``PersistentDataset`` whose cache files are written beside their final name and renamed
    (:func:`~medtl._fileutil.atomic_path`), and whose unreadable cache files are computed again.

    MONAI writes each file in the system's temporary folder and moves it with ``shutil.move``: across file
    systems that is a copy, so a full disk or a kill leaves a cut-off file under the final name, which
    MONAI then fails to load on every later run (``EOFError``, a torch ``RuntimeError``).
    """

    def _cachecheck(self, item_transformed: Any) -> Any:
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        hashfile = self.cache_dir / f"{self.hash_func(item_transformed).decode('utf-8')}{self.transform_hash}.pt"
        if hashfile.is_file():
            try:
                return torch.load(hashfile, weights_only=getattr(self, "weights_only", True))
            except (EOFError, RuntimeError, pickle.UnpicklingError) as exc:
                log.warning("%s: unreadable cache file (%s), computed again", hashfile, type(exc).__name__)
                hashfile.unlink(missing_ok=True)
        item = self._pre_transform(deepcopy(item_transformed))
        with atomic_path(hashfile) as tmp:
            torch.save(obj=convert_to_tensor(item, convert_numeric=False, track_meta=self.track_meta), f=tmp,
                       pickle_module=look_up_option(self.pickle_module, SUPPORTED_PICKLE_MOD),
                       pickle_protocol=self.pickle_protocol)
        return item


def _is_random(t: Any) -> bool:
    return isinstance(t, RandomizableTrait) or not isinstance(t, Transform)


def build_dataset(items: Sequence[dict[str, Any]], transform: Callable,
                  cache: Literal["memory", "disk", "none"] = "memory", cache_dir: str | os.PathLike | None = None,
                  num_workers: int | None = None, keys: Sequence[str] = ("image", "label"),
                  cache_key: str | None = None, progress: bool = False) -> Dataset:
    """A MONAI dataset yielding ``transform({"image", "label", "index"})`` per item.

    - ``"memory"``: ``CacheDataset`` runs the deterministic head of ``transform``
      (everything before its first random transform) once per item, with
      ``num_workers`` threads, when the dataset is built; later epochs only run
      the random tail (no DICOM is decoded twice).
    - ``"disk"``: ``PersistentDataset`` writes that head's output under
      ``cache_dir`` (``cache_dir/cache_key`` when given: pass
      ``Preprocessing.fingerprint()`` so that changed settings never reuse stale
      files: MONAI hashes the item and the names of the cached transforms, not
      their parameters).
    - ``"none"``: plain ``Dataset``, everything every time.

    Only ``keys`` (when present) are passed on, plus ``"index"`` (the item's
    position), so that string columns and missing values never reach collation.
    """
    data = []
    for i, it in enumerate(items):
        d = {k: it[k] for k in keys if k in it}
        d["index"] = i
        data.append(d)
    if cache == "none":
        return Dataset(data, transform=transform)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("cache='disk' needs cache_dir (data.cache_dir)")
        # Readable by this user only when medtl makes it: it holds every image decoded (patients' scans).
        Path(cache_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = Path(cache_dir) / cache_key if cache_key else Path(cache_dir)
        folder.mkdir(mode=0o700, exist_ok=True)
        # hash_transform: MONAI falls back to the class names of the cached head; that tells a training head
        # (stopping before augmentation) from an evaluation one (normalised), which cache_key cannot.
        return _AtomicPersistentDataset(data, transform=transform, cache_dir=folder, hash_transform=json_hashing)
    if cache == "memory":
        workers = cache_workers() if num_workers is None or num_workers < 0 else max(1, num_workers)
        tf = transform if isinstance(transform, Compose) else Compose(transform)
        has_random_tail = tf.get_index_of_first(_is_random) is not None
        try:
            return CacheDataset(data, transform=tf, cache_rate=1.0, num_workers=workers, progress=progress,
                                copy_cache=has_random_tail)
        except BaseException:
            _join_cache_workers()
            raise
    raise ValueError(f"cache must be memory, disk or none, got {cache!r}")


def _join_cache_workers(timeout: float = 60.0) -> None:
    """Wait for the threads of a caching pool that stopped on an error (a damaged image). MONAI's
    ``CacheDataset`` leaves its ``ThreadPool`` to ``terminate()``, which does not join threads: the ones
    still decoding ran into interpreter exit, and the process aborted ("terminate called without an
    active exception", exit 134) right after medtl's one-line error."""
    import threading
    import time
    from multiprocessing import pool

    end = time.monotonic() + timeout
    for t in threading.enumerate():
        if t is not threading.current_thread() and getattr(t, "_target", None) is pool.worker:
            t.join(max(0.0, end - time.monotonic()))


def class_counts(items: Sequence[dict[str, Any]], n_classes: int) -> list[int]:
    """Items per class index ``0..n_classes-1``."""
    c = Counter(int(it["label"]) for it in items)
    bad = [k for k in c if not 0 <= k < n_classes]
    if bad:
        raise ValueError(f"labels {sorted(bad)} outside 0..{n_classes - 1}")
    return [c.get(k, 0) for k in range(n_classes)]


def class_weights(items: Sequence[dict[str, Any]], n_classes: int) -> torch.Tensor:
    """Balanced loss weights ``N / (K * n_c)`` (scikit-learn's "balanced" rule), 0 for absent classes.

    Written out rather than calling ``sklearn.utils.compute_class_weight``,
    which refuses a class absent from the labels (possible after subsampling).
    """
    counts = class_counts(items, n_classes)
    present = sum(1 for n in counts if n)
    total = sum(counts)
    w = [total / (present * n) if n else 0.0 for n in counts]
    return torch.tensor(w, dtype=torch.float32)


def balanced_weights(items: Sequence[dict[str, Any]], n_classes: int) -> np.ndarray:
    """Per-item sampling weights ``1 / n_class``: a weighted draw picks every class equally often."""
    counts = class_counts(items, n_classes)
    return np.array([1.0 / counts[int(it["label"])] for it in items], dtype=np.float64)


def weighted_sampler(weights: Any, generator: torch.Generator,
                     num_samples: int | None = None) -> WeightedRandomSampler:
    """Draws (with replacement) in proportion to ``weights``, ``len(weights)`` per epoch unless ``num_samples``.

    The sampler draws from ``generator``: reseed it per epoch
    (``generator.manual_seed(seed + epoch)``) for an exact resume.
    """
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64), dtype=torch.double)
    return WeightedRandomSampler(w, num_samples=num_samples or len(w), replacement=True, generator=generator)


def balanced_sampler(items: Sequence[dict[str, Any]], n_classes: int, num_samples: int | None = None,
                     seed: int | None = None) -> WeightedRandomSampler:
    """Sampler drawing every class equally often (with replacement), ``len(items)`` draws per epoch.

    :func:`weighted_sampler` over :func:`balanced_weights` with its own generator seeded by
    ``seed`` (0 when None); reseed per epoch with ``sampler.generator.manual_seed(seed + epoch)``.
    """
    gen = torch.Generator()
    gen.manual_seed(0 if seed is None else int(seed))
    return weighted_sampler(balanced_weights(items, n_classes), gen, num_samples)
