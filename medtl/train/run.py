"""A training run from a config to a run directory (its layout and model card: :mod:`medtl.runs`),
and ``evaluate`` of a finished run on another dataset or split."""

from __future__ import annotations

import csv
import json
import math
import logging
import datetime as _dt
import os
import platform
import random
import unicodedata
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from medtl import __version__
from medtl._fileutil import atomic_path, error_at, hold_lock, lock_holder, remove_stale_temps, write_json
from medtl.config import Config, load_config
from medtl.errors import ConfigError, DimensionError, MedtlError
from medtl.io import Scan
from medtl.runs import (CARD_FORMAT, INTENDED_USE, LIMITATIONS, card_views, load_run, read_card, resolve_device,
                        save_weights, write_card)
from medtl.transforms.tta import tta_views

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.card.get("metrics", {})


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def build_model(cfg: Config, num_classes: int, progress: bool = True) -> nn.Module:
    from medtl.models import create

    model = create(cfg.model.arch, weights=cfg.model.weights, in_channels=cfg.preprocess.channels,
                   spatial_dims=cfg.preprocess.spatial_dims, num_classes=num_classes, inflate=cfg.model.inflate,
                   weights_dir=cfg.model.weights_dir, progress=progress, **cfg.model.kwargs)
    if cfg.model.dropout:
        model.drop.p = cfg.model.dropout
    if cfg.model.drop_path is not None:
        model.set_drop_path(cfg.model.drop_path)
    return model


def check_weights(cfg: Config, progress: bool = True) -> None:
    """Find (or download) ``model.weights`` before the data is read, so a missing or damaged file fails in
    seconds rather than after a cohort's worth of decoding; :func:`build_model` finds it again (the
    SHA-256 is memoised per file)."""
    from medtl.models import list_models
    from medtl.models.factory import checked_weights_file
    from medtl.models.weights import resolve

    if cfg.model.weights == "imagenet":
        if cfg.model.arch in list_models():  # an unknown name: build_model says which names there are
            resolve(cfg.model.arch, weights_dir=cfg.model.weights_dir, progress=progress)
    elif cfg.model.weights is not None:
        checked_weights_file(cfg.model.weights)


@dataclass
class PreparedData:
    """A cohort with its preprocessing and MONAI datasets (train with augmentation; val/test without)."""

    cohort: Any
    prep: Any
    train_ds: Any
    val_ds: Any
    test_ds: Any
    train_transform: Any
    cfg: Config  #: the config with ``preprocess.channels: auto`` resolved


#: Images ``preprocess.channels: auto`` and the ``window: auto`` check look at, spread over the cohort in path order.
CHANNELS_SAMPLE = 8


def sample_scans(items: list[dict]) -> list[Scan]:
    """Up to :data:`CHANNELS_SAMPLE` of the cohort's images, spread over it in path order (so what is
    read from them does not change with the seed's split), decoded."""
    from medtl.transforms.load import as_scan

    ordered = sorted(items, key=lambda it: str(it["image"]) if isinstance(it["image"], (str, os.PathLike)) else "")
    step = max(1, len(ordered) // CHANNELS_SAMPLE)
    return [as_scan(it["image"]) for it in ordered[::step][:CHANNELS_SAMPLE]]


def resolve_channels(cfg: Config, sample: list[Scan]) -> Config:
    """``preprocess.channels: auto`` -> 3 when any image of ``sample`` (:func:`sample_scans`) is colour,
    else 1 (a copy)."""
    if cfg.preprocess.channels != "auto":
        return cfg
    if not sample:
        raise MedtlError(f"{cfg.data.path}: preprocess.channels=auto needs an image to look at")
    colour = [scan.is_color for scan in sample]
    if any(colour) and not all(colour):
        log.warning("%s: the cohort mixes gray and colour images; preprocess.channels=auto -> 3 (gray images are "
                    "repeated over the 3 channels)", cfg.data.path)
    cfg = cfg.model_copy(deep=True)
    cfg.preprocess.channels = 3 if any(colour) else 1
    log.info("preprocess.channels=auto -> %d", cfg.preprocess.channels)
    return cfg


def augment_modality(cfg: Config, sample: list[Scan]) -> str | None:
    """The modality the domain-shift preset imitates (``MR``: Rician noise and k-space spikes):
    ``data.modality``, else the one modality every image of ``sample`` records, else None."""
    if cfg.data.modality:
        return cfg.data.modality
    found = {str(scan.modality).upper() for scan in sample}
    return found.pop() if len(found) == 1 else None


def _window_is(cfg: Config, name: str) -> bool:
    """``preprocess.window`` is the named mode (``auto``, ``none``); a spec that is not valid is left to the
    preprocessing, which names the field."""
    return str(cfg.preprocess.window).strip().lower() == name


def auto_window_note(cfg: Config, sample: list[Scan]) -> str | None:
    """Under ``preprocess.window: auto`` each image is scaled by its own facts (its file's window, else
    /255 when 8-bit, else a wide CT window, else percentiles): a line saying so when ``sample`` gets
    more than one of these, since the network then sees one tissue at different intensities."""
    from medtl.transforms.intensity import BYTE_WINDOW, resolve_window

    if not _window_is(cfg, "auto"):
        return None
    kinds: dict[str, None] = {}
    for scan in sample:
        mode = resolve_window("auto", scan.default_window, scan.modality, str(scan.array.dtype))
        if scan.default_window is not None and mode == scan.default_window:
            kinds[f"the file's window {mode[0]:g}/{mode[1]:g}"] = None
        elif mode == "percentile":
            kinds["a percentile stretch"] = None
        elif mode == BYTE_WINDOW:
            kinds["/255 (8-bit)"] = None
        else:
            kinds[f"the wide CT window {mode[0]:g}/{mode[1]:g}"] = None
    if len(kinds) < 2:
        return None
    return (f"{cfg.data.path}: preprocess.window=auto scales these images differently ({'; '.join(kinds)}), so "
            "one tissue reaches the network at different intensities; set one window for all "
            "(preprocess.window=percentile, a CT preset such as soft_tissue, or center/width numbers like 40/400)")


def domain_shift_note(cfg: Config) -> str | None:
    """A line when ``augment.domain_shift`` meets ``preprocess.window: none``: the preset's ranges (noise sd
    up to 0.05, a multiplicative bias field) are for intensities in ``[0, 1]``, so on raw values such as
    HU its noise is nothing and its shading scales negative values the wrong way."""
    if cfg.augment.domain_shift == "none" or not _window_is(cfg, "none"):
        return None
    return (f"augment.domain_shift={cfg.augment.domain_shift} imitates other scanners on intensities in [0, 1], "
            "but preprocess.window=none leaves the raw values (e.g. HU), where its noise and blur are negligible "
            "and its bias field scales negative values; set a window (preprocess.window=auto, percentile or a CT "
            "preset such as soft_tissue) or augment.domain_shift=none")


def prepare_data(cfg: Config, progress: bool = True) -> PreparedData:
    """Load the cohort of ``cfg.data`` and build its cached datasets with ``cfg.preprocess``/``augment``."""
    from medtl.data import build_dataset, load_items
    from medtl.transforms import Preprocessing

    cohort = load_items(cfg.data, seed=cfg.train.seed)
    check_classes(cohort, cfg.data.path)  # before anything is decoded: these refusals are cheap
    check_patient_splits(cohort, cfg.data.path)
    cfg = monitor_for_validation(cfg, cohort)
    wanted = (cfg.preprocess.channels == "auto" or _window_is(cfg, "auto")
              or (cfg.augment.domain_shift != "none" and not cfg.data.modality))
    sample = sample_scans(cohort.items) if wanted else []
    cfg = resolve_channels(cfg, sample)
    for note in (auto_window_note(cfg, sample), domain_shift_note(cfg)):
        if note:
            log.warning("%s", note)
    prep = Preprocessing.from_config(cfg.preprocess)
    common = dict(cache=cfg.data.cache, cache_dir=cfg.data.cache_dir, num_workers=cfg.data.num_workers,
                  cache_key=prep.fingerprint(), progress=progress)
    train_tf = prep.transforms(cfg.augment if _augments(cfg) else None, modality=augment_modality(cfg, sample))
    eval_tf = prep.transforms()
    train_ds = build_dataset(cohort.split("train"), train_tf, **common)
    val_items, test_items = cohort.split("val"), cohort.split("test")
    val_ds = build_dataset(val_items, eval_tf, **common) if val_items else None
    test_ds = build_dataset(test_items, eval_tf, **common) if test_items else None
    return PreparedData(cohort, prep, train_ds, val_ds, test_ds, train_tf, cfg)


def _saved_config(cfg: Config) -> Config:
    """``cfg`` as a run folder keeps it: ``data.path`` made absolute, so ``medtl evaluate`` finds the
    training data from any working folder."""
    if not cfg.data.path or Path(cfg.data.path).is_absolute():
        return cfg
    saved = cfg.model_copy(deep=True)
    saved.data.path = str(Path(cfg.data.path).expanduser().resolve())
    return saved


def _augments(cfg: Config) -> bool:
    a = cfg.augment
    return bool(a.flip or a.rotate_deg or a.zoom != (1.0, 1.0) or a.shift or a.elastic or a.domain_shift != "none")


def _loader(ds, cfg: Config):
    from monai.data import DataLoader

    from medtl.train.engine import loader_workers

    return DataLoader(ds, batch_size=cfg.train.batch_size * 2, shuffle=False,
                      num_workers=loader_workers(resolve_device(cfg.train.device), cfg.data.num_workers))


def _write_predictions(path: Path, items: list[dict], labels: np.ndarray, probs: np.ndarray,
                       class_names: list[str], threshold: float | None) -> None:
    """One row per case: its label and ``predicted`` class (indices into ``class_names``; two classes at
    ``threshold``, more by the argmax, as the metrics decide) and every class probability."""
    from medtl.train.metrics import decide

    predicted = decide(probs, threshold)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "image", "label", "predicted"] + [f"p_{c}" for c in class_names])
        for i, (it, y, p) in enumerate(zip(items, labels, probs)):
            image = it["image"] if isinstance(it["image"], (str, os.PathLike)) else f"array[{i}]"
            # shortest text that reads back the same float: fixed decimals would write every p
            # above 0.9999995 as 1.000000 and tie the confident cases a reader ranks (ROC, AUC)
            w.writerow([i, image, int(y), int(predicted[i])] + [repr(float(v)) for v in p])


def _threshold(cfg: Config, val_labels: np.ndarray | None, val_probs: np.ndarray | None, n_classes: int):
    from medtl.train.metrics import youden_threshold

    if n_classes != 2:
        return None
    t = cfg.eval.threshold
    if isinstance(t, (int, float)):
        return float(t)
    if val_labels is not None and len(np.unique(val_labels)) == 2:
        return float(youden_threshold(val_labels, val_probs[:, 1]))
    return 0.5


def with_min_steps(cfg: Config, n_train: int) -> Config:
    """``cfg`` with ``train.epochs`` raised so that the run takes at least ``train.min_steps`` steps."""
    from medtl.train.engine import steps_per_epoch

    tc = cfg.train
    if not tc.min_steps:
        return cfg
    epochs = max(tc.epochs, math.ceil(tc.min_steps / steps_per_epoch(n_train, tc.batch_size)))
    if epochs == tc.epochs:
        return cfg
    log.info("train.min_steps=%d -> %d epochs of %d images", tc.min_steps, epochs, n_train)
    cfg = cfg.model_copy(deep=True)
    cfg.train.epochs = epochs
    return cfg


def balance_weights(cfg: Config, cohort: Any) -> tuple[torch.Tensor | None, np.ndarray | None]:
    """``train.balance``'s ``(class weights for the loss, per-image weights for the sampler)``: at most one
    is set (``loss`` and ``sampler``); ``fit`` and the range test take the same."""
    from medtl.data import balanced_weights, class_weights

    items, n = cohort.split("train"), len(cohort.class_names)
    return (class_weights(items, n) if cfg.train.balance == "loss" else None,
            balanced_weights(items, n) if cfg.train.balance == "sampler" else None)


def run_lr_finder(model: nn.Module, data: PreparedData, cfg: Config, out: Path | None):
    """The learning-rate range test on the training data (a copy of ``model`` trains; ``model`` is
    untouched); with ``out``, writes ``out/lr_find.json`` and ``out/plots/lr_find.png``.

    torch's random state is given back as it was: what training draws before its first epoch reseeds (the
    augmentation state of its loader, ``train.batchnorm=reestimate``'s pass) is then the same as in a rerun
    from the run's ``config.yaml``, whose ``train.lr`` is the chosen number and which runs no range test."""
    from medtl.train.engine import make_criterion, make_train_loader
    from medtl.train.lr_finder import find_lr
    from medtl.train.plots import plot_lr_find

    device = resolve_device(cfg.train.device)
    class_w, sample_w = balance_weights(cfg, data.cohort)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        loader, _, generator = make_train_loader(data.train_ds, cfg, device, sample_weights=sample_w)
        generator.manual_seed(cfg.train.seed)
        torch.manual_seed(cfg.train.seed)
        result = find_lr(model, loader, cfg.train, device, steps=cfg.train.lr_find_steps,
                         criterion=make_criterion(cfg.train, class_w, device),
                         pretrained=cfg.model.weights is not None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "lr_find.json", result.to_dict())
        plot_lr_find(result.lrs, result.losses, result.suggestion, out / "plots" / "lr_find.png")
    return result


def _require_config(cfg: Any, where: str) -> None:
    """A recipe name, a path or a dict given where a validated :class:`Config` belongs failed deep inside
    with ``AttributeError: 'str' object has no attribute 'model'``; a Config holding a value its schema
    refuses is refused as from YAML."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"{where}() takes a Config, got {type(cfg).__name__} "
                          "(cfg = medtl.config.load_config('recipe name or config.yaml', ['train.epochs=5']))")
    # model_copy(update=...) and model_construct skip validation: check once more, in the YAML path's words
    Config.model_validate(cfg.model_dump())


def find_learning_rate(cfg: Config, out_dir: str | os.PathLike, progress: bool = True):
    """``medtl train --find-lr``: only the range test; writes ``lr_find.json`` and the plot in ``out_dir``."""
    _require_config(cfg, "find_learning_rate")
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    check_weights(cfg, progress)
    data = prepare_data(cfg, progress)
    if len(data.train_ds) == 0:
        raise MedtlError(f"{cfg.data.path}: the train split is empty")
    model = build_model(data.cfg, len(data.cohort.class_names), progress=progress)
    return run_lr_finder(model, data, with_min_steps(data.cfg, len(data.train_ds)), Path(out_dir))


#: What a training writes in its run folder (an ensemble's ``members`` is left out: a killed ensemble's
#: folder holds only that, and ``--resume`` must continue it).
RUN_CONTENTS = ("config.yaml", "metrics.csv", "model.safetensors", "model_card.json", "ood.safetensors",
                "predictions_test.csv", "lr_find.json", "checkpoints", "plots", "tensorboard")


def _check_run_folder(out: Path) -> None:
    """Refuse, before any work, an ``out`` that is a file, or a folder medtl train did not make (no
    ``.train.lock``, no ``model_card.json``) holding something of a name a training writes: a user's
    ``config.yaml`` or ``metrics.csv`` is never replaced."""
    if out.exists() and not out.is_dir():
        raise MedtlError(f"{out}: is a file, not a folder; choose another --out")
    if not out.is_dir() or (out / ".train.lock").exists() or (out / "model_card.json").exists():
        return
    clash = next((out / name for name in RUN_CONTENTS if (out / name).exists()), None)
    if clash is not None:
        raise MedtlError(f"{clash}: exists in a folder that is not a medtl run; refusing to replace it: "
                         "choose another --out (a new or empty folder)")


def train(cfg: Config, out_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
          max_epochs_this_run: int | None = None) -> RunResult:
    """Fine-tune per ``cfg`` and write the run directory (see module docstring).

    The shortest path to a good model is the default config (ImageNet weights,
    gradual unfreezing with discriminative learning rates, one-cycle); every
    knob is in ``cfg``. With ``train.ensemble`` > 1 the run is that many runs of the recipe, averaged
    (:func:`train_ensemble`). One training at a time writes a run folder (a lock beside its files).
    """
    _require_config(cfg, "train")
    out = Path(out_dir)
    _check_run_folder(out)
    check_weights(cfg, progress)
    if cfg.train.ensemble > 1:
        return train_ensemble(cfg, out, resume=resume, progress=progress, max_epochs_this_run=max_epochs_this_run)
    from medtl.train.strategy import resolve_batchnorm

    bn = resolve_batchnorm(cfg.train, cfg.preprocess.spatial_dims)
    if bn != cfg.train.batchnorm:
        log.info("train.batchnorm=auto -> %s (%dD, batch %d)", bn, cfg.preprocess.spatial_dims, cfg.train.batch_size)
        cfg = cfg.model_copy(deep=True)
        cfg.train.batchnorm = bn  # the run's config.yaml and card record what was done
    tc = cfg.train
    if cfg.model.weights is None and tc.strategy in ("linear", "partial"):
        log.warning("train.strategy=%s with model.weights=null keeps stages of a random network frozen for the "
                    "whole run (only %s learn); from scratch use train.strategy=full", tc.strategy,
                    "the head" if tc.strategy == "linear" else "the last stages")
    seed_everything(tc.seed, tc.deterministic)
    if tc.threads:  # before anything heavy (the cache, the LR range test), not only in fit
        torch.set_num_threads(tc.threads)
    if resume and not (out / "checkpoints" / "last.pt").is_file():  # before minutes of reading the data
        raise MedtlError(f"{out}: no run to resume (no checkpoints/last.pt); run without --resume to start it")
    is_main = int(os.environ.get("RANK", "0")) == 0
    lock = None
    created = [d for d in (out, *out.parents) if not d.exists()] if is_main else []
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        lock = hold_lock(out / ".train.lock")  # two trainings into one folder mixed their files
        if lock is None:
            raise MedtlError(f"{out}: another `medtl train`{lock_holder(out / '.train.lock')} is writing this run "
                             "folder; wait for it or use another --out")
    finished = False
    try:
        if is_main and not resume and (out / "checkpoints" / "last.pt").exists():
            raise MedtlError(f"{out}: already holds a run (use --resume to continue it, or another --out)")
        if is_main:  # a killed run's half-written files (a whole checkpoint each); the lock says no write is going on
            for folder in (out, out / "checkpoints"):
                remove_stale_temps(folder)
        result = _train_single(cfg, out, resume, progress, max_epochs_this_run, is_main)
        finished = True
        return result
    finally:
        if lock is not None:
            lock.close()
        if created and not finished:
            _remove_if_only_lock(created)


def _remove_if_only_lock(created: list[Path]) -> None:
    """Remove the run folder (``created[0]``) and the parents this training created when it holds nothing
    but its lock (refused before anything of a run was written: a bad data path, bad labels), so no empty
    'run' is left to be mistaken for one."""
    out = created[0]
    try:
        if [p.name for p in out.iterdir()] != [".train.lock"]:
            return
        (out / ".train.lock").unlink()
        for d in created:
            d.rmdir()
    except OSError:
        pass


def _train_single(cfg: Config, out: Path, resume: bool, progress: bool, max_epochs_this_run: int | None,
                  is_main: bool) -> RunResult:
    """:func:`train` of one model, with the run folder's lock held."""
    from medtl.train.engine import fit, loader_workers, steps_per_epoch

    data = prepare_data(cfg, progress and is_main)
    cfg, cohort, prep = data.cfg, data.cohort, data.prep
    train_ds, val_ds, test_ds, train_tf = data.train_ds, data.val_ds, data.test_ds, data.train_transform
    class_names = cohort.class_names
    if len(train_ds) == 0:
        raise MedtlError(f"{cfg.data.path}: the train split is empty")
    model = build_model(cfg, len(class_names), progress=progress)
    cfg = with_min_steps(cfg, len(train_ds))
    if resume and is_main:
        check_schedule_unchanged(out, cfg)
    lr_finder = None
    if cfg.train.lr == "auto":
        if resume and (out / "lr_find.json").is_file():  # the resumed run keeps the rate it started with
            lr_finder = json.loads((out / "lr_find.json").read_text())
        else:
            lr_finder = run_lr_finder(model, data, cfg, out if is_main else None).to_dict()
        cfg = cfg.model_copy(deep=True)
        cfg.train.lr = lr_finder["suggestion"]
        log.info("train.lr=auto -> %.3g (learning-rate range test)", cfg.train.lr)
    tc = cfg.train
    if is_main:
        _saved_config(cfg).save(out / "config.yaml")

    def on_best(m: nn.Module, epoch: int, row: dict) -> None:
        save_weights(m, out / "model.safetensors")

    weights, sample_w = balance_weights(cfg, cohort)
    state = fit(model, train_ds, val_ds, cfg, out, train_transform=train_tf, class_weights=weights,
                sample_weights=sample_w, resume=resume, max_epochs_this_run=max_epochs_this_run,
                on_best=on_best, progress=progress)
    finished = state.epoch >= tc.epochs or (tc.patience and state.bad_epochs >= tc.patience)
    if not is_main or not finished:
        return RunResult(out)

    import monai
    from safetensors.torch import load_file

    kept = state.best_epoch if state.best_epoch > 0 else None
    device = resolve_device(tc.device)
    if kept is None:  # the monitored figure was never a number: no epoch was ever "best"
        log.warning("%s: validation %s was never a number in %d epochs; the last epoch's weights are the model",
                    out, tc.monitor, state.epoch)
        save_weights(model, out / "model.safetensors")
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    training = {
        "strategy": tc.strategy, "epochs": tc.epochs, "epochs_run": state.epoch, "best_epoch": kept,
        "steps_per_epoch": steps_per_epoch(len(train_ds), tc.batch_size), "min_steps": tc.min_steps,
        "lr": tc.lr, **({"lr_finder": {"suggestion": lr_finder["suggestion"], "plot": "plots/lr_find.png"}}
                        if lr_finder else {}),
        "monitor": tc.monitor, "best_score": state.best_score, "seed": tc.seed,
        # what else a rerun must match for the same weights: CPU kernels sum in another order at another thread
        # count, and each loader worker draws its own augmentation
        "threads": torch.get_num_threads(), "device": device.type, "torch": torch.__version__,
        "monai": monai.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "loader_workers": loader_workers(device, cfg.data.num_workers),
        **({"swa": state.swa} if state.swa else {}), **({"soup": state.soup} if state.soup else {}),
        **({"l2sp": tc.l2sp} if tc.l2sp and cfg.model.weights is not None else {}),
        "augment": cfg.augment.model_dump(mode="json"),
        # the whole recipe travels with the model, not only in config.yaml beside it
        "settings": {"train": tc.model_dump(mode="json"),
                     "model": cfg.model.model_dump(mode="json", include={"dropout", "drop_path", "kwargs"})},
        "data": {"source": Path(cfg.data.path).name, "format": cohort.format, "counts": cohort.counts(),
                 "train_fraction": cfg.data.train_fraction, "train_size": cfg.data.train_size,
                 "max_per_class": cfg.data.max_per_class,
                 "seed": cfg.data.seed if cfg.data.seed is not None else tc.seed, "filter": dict(cfg.data.filter),
                 "fingerprint": cohort.fingerprint()},
    }
    return RunResult(out, _finish(model, cfg, cohort, prep, val_ds, test_ds, out, training, progress))


#: What lays out a run's learning-rate schedule over its steps: a resumed run must keep them, or its
#: restored schedule no longer fits (one-cycle stops at its old step count; cosine jumps).
SCHEDULE_FIELDS = ("schedule", "epochs", "batch_size", "warmup")


def check_schedule_unchanged(out: Path, cfg: Config) -> None:
    """Refuse to resume the run in ``out`` with ``cfg`` when it changes a field of :data:`SCHEDULE_FIELDS`
    that the run's ``config.yaml`` records (``train.epochs`` alone may change under a constant schedule),
    before anything of the run is rewritten."""
    saved = out / "config.yaml"
    if not saved.is_file():
        return
    before, now = load_config(saved).train, cfg.train
    changed = [k for k in SCHEDULE_FIELDS if getattr(before, k) != getattr(now, k)
               and not (k == "epochs" and before.schedule == now.schedule == "constant")]
    if changed:
        k = changed[0]
        raise MedtlError(f"{out}: resuming with train.{k}={getattr(now, k)} (the run was laid out with "
                         f"{getattr(before, k)}): a {before.schedule} schedule cannot be stretched part-way; resume "
                         f"without that override, or start a new run with it (another --out)")


def check_classes(cohort: Any, where: Any) -> None:
    """Refuse a cohort a classifier cannot learn from: fewer than two classes among the training
    images, a class without one (integer labels 0, 1 and 3 leave class 2 empty), or two class names
    that differ only in case, spaces or Unicode form (``Normal`` and ``normal``; ``sévère`` typed and from a
    macOS file name, NFC and NFD)."""
    counts = cohort.counts().get("train", {})
    present = [name for name, n in counts.items() if n]
    if len(present) < 2:
        raise MedtlError(f"{where}: the training images hold only the class {present or ['(none)']}; a classifier "
                         "needs images of at least two classes (check the label column)")
    folded: dict[str, str] = {}
    for name in cohort.class_names:
        key = unicodedata.normalize("NFKC", str(name)).strip().casefold()
        if key in folded:
            how = "case or spaces" if str(name).strip().casefold() == folded[key].strip().casefold() else \
                "Unicode form (an accent composed in one, combined in the other: NFC and NFD)"
            raise MedtlError(f"{where}: labels {folded[key]!r} and {name!r} differ only in {how}, so they "
                             "would train as two classes: write them alike")
        folded[key] = str(name)
    empty = [name for name, n in counts.items() if not n]
    if empty:
        hint = (f"integer labels are class indices 0..K-1 and no training image is labelled {empty[0]}: number the "
                f"{len(present)} classes from 0 without a gap (0..{len(present) - 1}), or use class names"
                ) if all(str(n).isdigit() for n in counts) else \
            "give it training images, or leave it out of data.class_names"
        names = list(counts)
        shown = f"{names}" if len(names) <= 10 else f"{len(names):,} classes, e.g. {names[:5]}"
        raise MedtlError(f"{where}: class {empty[0]!r} has no training image (of {shown}); {hint}")


def check_patient_splits(cohort: Any, where: Any) -> None:
    """Refuse a cohort whose given splits put one patient (``patient_id``) in two of them: validation
    and test figures would be measured on patients the model trained on. Says how many, never who."""
    seen: dict[str, set[str]] = {}
    for it in cohort.items:
        pid = it.get("patient_id")
        if pid not in (None, ""):
            seen.setdefault(str(pid), set()).add(str(it.get("split")))
    leaks = [sorted(s) for s in seen.values() if len(s) > 1]
    if leaks:
        pairs = sorted({" and ".join(s) for s in leaks})
        raise MedtlError(f"{where}: {len(leaks)} patient(s) have images in more than one split ({'; '.join(pairs)}), "
                         "so validation and test would score patients the model trained on: put each patient's "
                         "images in one split, or leave the split column out and medtl splits by patient")


#: Monitored figures that need every class in the validation split.
_NEEDS_BOTH = {"auc", "sensitivity", "specificity", "ppv", "npv", "f1"}
#: Monitored figures of two classes only (:func:`medtl.train.metrics.classification_metrics` omits them otherwise).
_BINARY_ONLY = {"sensitivity", "specificity", "ppv", "npv", "f1"}


def monitor_for_validation(cfg: Config, cohort: Any) -> Config:
    """``cfg`` with ``train.monitor=loss`` when the validation split lacks a class and the monitor needs
    every class (AUC is undefined every epoch, so no epoch would be kept and patience would stop the run);
    the change is logged and recorded in the run's config. A two-class monitor of a cohort of more classes
    is refused (it is never a number there), and so is a numeric ``eval.threshold`` (it was ignored without a word)."""
    n_classes = len(cohort.class_names)
    if n_classes > 2 and isinstance(cfg.eval.threshold, (int, float)):
        raise MedtlError(f"{cfg.data.path}: eval.threshold={cfg.eval.threshold} is a threshold on the second class's "
                         f"probability and this cohort has {n_classes} classes, whose prediction is the most "
                         "probable class: leave eval.threshold out (or val_youden)")
    if n_classes > 2 and cfg.train.monitor in _BINARY_ONLY:
        raise MedtlError(f"{cfg.data.path}: train.monitor={cfg.train.monitor} is a two-class figure and this cohort "
                         f"has {n_classes} classes, so no epoch would ever be chosen: monitor auc, loss, accuracy, "
                         "balanced_accuracy, nll, brier or ece")
    if n_classes == 2 and cfg.train.monitor == "qwk":
        raise MedtlError(f"{cfg.data.path}: train.monitor=qwk is the kappa of ordered grades, computed for more than "
                         "two classes; this cohort has two: monitor auc (or loss, f1 ...)")
    val_classes = {it["label"] for it in cohort.split("val")}
    if not val_classes or len(val_classes) >= n_classes or cfg.train.monitor not in _NEEDS_BOTH:
        return cfg
    if len(val_classes) == 1:
        log.warning("the validation split holds one class only: train.monitor=%s is undefined there, using loss",
                    cfg.train.monitor)
    else:
        log.warning("the validation split holds %d of the %d classes: train.monitor=%s is undefined there, using "
                    "loss", len(val_classes), n_classes, cfg.train.monitor)
    cfg = cfg.model_copy(deep=True)
    cfg.train.monitor = "loss"
    return cfg


def _finish(model: nn.Module, cfg: Config, cohort: Any, prep: Any, val_ds: Any, test_ds: Any, out: Path,
            training: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Evaluate a trained ``model`` (weights already in ``out/model.safetensors``) on validation and test,
    fit its guards, and write its model card (``training``: the card's account of how it was trained)."""
    from medtl.train.engine import predict_loader
    from medtl.train.metrics import evaluate_predictions
    from medtl.train.plots import plot_learning_curves, save_evaluation_plots

    tc = cfg.train
    class_names = cohort.class_names
    device = resolve_device(tc.device)
    model.to(device)
    metrics: dict[str, Any] = {}
    views = tta_views(cfg.augment, cfg.preprocess.spatial_dims) if cfg.eval.tta else None
    val_labels = val_probs = None
    if val_ds is not None:
        val_probs, val_labels, _ = predict_loader(model, _loader(val_ds, cfg), device, views=views)
    threshold = _threshold(cfg, val_labels, val_probs, len(class_names))
    if val_ds is not None:
        metrics["val"] = evaluate_predictions(val_labels, val_probs, threshold=threshold,
                                              bootstrap=cfg.eval.bootstrap, seed=tc.seed, class_names=class_names)
    plots: dict[str, str] = {}
    if test_ds is not None:
        probs, labels, _ = predict_loader(model, _loader(test_ds, cfg), device, progress=progress, desc="test",
                                          views=views)
        metrics["test"] = evaluate_predictions(labels, probs, threshold=threshold, bootstrap=cfg.eval.bootstrap,
                                               seed=tc.seed, class_names=class_names)
        _write_predictions(out / "predictions_test.csv", cohort.split("test"), labels, probs, class_names,
                           metrics["test"]["threshold"])
        plots.update({k: str(Path(v).relative_to(out)) for k, v in save_evaluation_plots(
            labels, probs, class_names, out / "plots", prefix="test_",
            threshold=threshold if threshold is not None else 0.5).items()})
    curves = (out / "metrics.csv").is_file()  # an ensemble has none: its curves are its members' (members/<j>)
    if curves:
        plots["learning_curves"] = str(plot_learning_curves(out / "metrics.csv", out / "plots" / "learning_curves.png")
                                       .relative_to(out))
    from medtl.train.guarding import guard_entries, saliency_entry

    auc_ci = metrics.get("val", {}).get("ci", {}).get("auc")
    guard = guard_entries(model, cfg, cohort, prep, lambda ds: _loader(ds, cfg), device, out,
                          val_probs, val_labels, tuple(auc_ci) if auc_ci else None)
    if len(class_names) == 2:
        try:
            guard["saliency"] = saliency_entry(model, prep, cohort, positive=1)
        except (MedtlError, ValueError) as exc:  # a mask that does not fit its scan must not cost the run its card
            log.warning("saliency check skipped: %s", exc)
    if (guard.get("degenerate") or {}).get("degenerate"):
        log.warning("%s: the model did not learn to separate the classes: %s", out,
                    "; ".join(guard["degenerate"]["reasons"]))
    card = {
        "format": CARD_FORMAT,
        "medtl_version": __version__,
        "name": cfg.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "task": cfg.task,
        "class_names": class_names,
        "positive_class": class_names[1] if len(class_names) == 2 else None,
        "threshold": threshold,
        "model": model.card,
        "preprocessing": prep.to_dict(),
        **({"tta": {"views": [v.to_dict() for v in views]}} if views else {}),
        "training": training,
        "metrics": metrics,
        **guard,
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "files": {"weights": "model.safetensors", "config": "config.yaml",
                  **({"metrics": "metrics.csv"} if curves else {}),
                  "plots": plots, **({"ood": guard["ood"]["file"]} if guard.get("ood") else {})},
    }
    write_card(out, card)
    return card


#: Member j of an ensemble trains with seed ``train.seed + MEMBER_SEED_STEP * j``.
MEMBER_SEED_STEP = 100


def member_config(cfg: Config, j: int) -> Config:
    """The config of ensemble member ``j``: one network (``train.ensemble: 1``), seed
    ``train.seed + 100 j``, on the cohort of ``cfg`` (``data.seed`` fixed to what ``cfg`` draws with)."""
    m = cfg.model_copy(deep=True)
    m.train.ensemble = 1
    m.train.seed = cfg.train.seed + MEMBER_SEED_STEP * j
    m.data.seed = cfg.data.seed if cfg.data.seed is not None else cfg.train.seed
    return m


def train_ensemble(cfg: Config, out: Path, resume: bool = False, progress: bool = True,
                   max_epochs_this_run: int | None = None) -> RunResult:
    """``train.ensemble`` runs of the recipe, one after another (:func:`member_config`), each a complete run
    folder under ``out/members/<j>``; then their :class:`~medtl.models.ensemble.Ensemble` (the members'
    probabilities averaged) is evaluated and written as the run's model and card. ``resume`` skips the
    finished members and continues the unfinished one."""
    from medtl.data import build_dataset, load_items
    from medtl.models.ensemble import Ensemble

    k = cfg.train.ensemble
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MedtlError("train.ensemble trains its members one after another in one process: run it without "
                         "torchrun, or leave train.ensemble at 1")
    if not resume and any((out / p).exists() for p in ("members", "checkpoints/last.pt", "model_card.json")):
        raise MedtlError(f"{out}: already holds a run (use --resume to continue it, or another --out)")
    from tqdm.auto import tqdm

    members = tqdm(range(k), desc=f"ensemble of {k}", unit="member", disable=not progress, dynamic_ncols=True)
    for j in members:
        mdir = out / "members" / str(j)
        if resume and (mdir / "model_card.json").is_file():
            continue
        mcfg = member_config(cfg, j)
        members.set_postfix_str(f"member {j + 1} of {k}, seed {mcfg.train.seed}")
        log.info("ensemble member %d of %d (seed %d)", j + 1, k, mcfg.train.seed)
        result = train(mcfg, mdir, resume=resume and (mdir / "checkpoints" / "last.pt").exists(), progress=progress,
                       max_epochs_this_run=max_epochs_this_run)
        if not result.card:  # stopped by max_epochs_this_run: --resume continues this member
            return RunResult(out)
    loaded = [load_run(out / "members" / str(j)) for j in range(k)]
    model, cards, prep = Ensemble([m for m, _, _ in loaded]), [c for _, c, _ in loaded], loaded[0][2]
    cfg = load_config(out / "members" / "0" / "config.yaml")  # channels resolved, lr chosen: member 0's
    cfg.train.ensemble = k  # member 0 has the ensemble's own seed (offset 0) and its cohort seed
    cfg.save(out / "config.yaml")
    save_weights(model, out / "model.safetensors")
    cohort = load_items(cfg.data, seed=cfg.train.seed)
    val_items, test_items = cohort.split("val"), cohort.split("test")
    val_ds = build_dataset(val_items, prep.transforms(), cache="none") if val_items else None
    test_ds = build_dataset(test_items, prep.transforms(), cache="none") if test_items else None
    first = cards[0]["training"]
    training = {**{key: first[key] for key in ("strategy", "epochs", "steps_per_epoch", "min_steps", "monitor",
                                               "augment", "data") if key in first},
                "seed": cfg.train.seed,
                # what a rerun must match, member by member (a resumed ensemble may have members of two machines)
                "ensemble": [{"dir": f"members/{j}", **{key: c["training"].get(key) for key in (
                    "seed", "lr", "epochs_run", "best_epoch", "best_score", "threads", "device", "loader_workers",
                    "torch", "monai", "numpy", "python")},
                    "val_auc": c["metrics"].get("val", {}).get("auc")} for j, c in enumerate(cards)]}
    return RunResult(out, _finish(model, cfg, cohort, prep, val_ds, test_ds, out, training, progress))


def _evaluation_names(split: str) -> list[str]:
    """The files :func:`evaluate` writes for ``split``, ``metrics.json`` first."""
    return ["metrics.json", f"predictions_{split}.csv",
            *(f"{split}_{kind}.png" for kind in ("roc", "pr", "confusion", "calibration"))]


def _write_evaluation(out_dir: Path, split: str, write: Callable[[Path], None]) -> None:
    """Write one evaluation's files into ``out_dir`` as one set: ``write(folder)`` writes them into a hidden
    staging folder inside ``out_dir``, and they are moved in only once every one was written, so a full
    disk leaves the previous evaluation whole instead of new metrics beside old plots. A previous plot this
    evaluation has not (ROC and PR of one-class data) goes too. An OSError names the file in ``out_dir``."""
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(out_dir / ".evaluate.lock", wait=True)
    try:
        for left in out_dir.glob(".evaluate.*.staging"):  # a killed evaluation's
            shutil.rmtree(left, ignore_errors=True)
        try:
            staging = Path(tempfile.mkdtemp(prefix=".evaluate.", suffix=".staging", dir=out_dir))
        except OSError as exc:
            raise error_at(exc, out_dir / "metrics.json") from exc
        try:
            try:
                write(staging)
            except OSError as exc:
                if exc.filename and Path(exc.filename).parent == staging:
                    raise error_at(exc, out_dir / Path(exc.filename).name) from exc
                raise
            names = _evaluation_names(split)  # metrics.json first: it marks the folder as an evaluation's
            for name in names:
                if not (staging / name).exists():
                    (out_dir / name).unlink(missing_ok=True)
            for name in names:
                if (staging / name).exists():
                    os.replace(staging / name, out_dir / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.close()


def in_model_classes(cohort: Any, names: list[str], where: Any) -> Any:
    """``cohort`` labelled with the indices of the model's ``names``: data naming some of them (another site
    without one grade, whose own class list is then shorter or in another order) is mapped by name; a class the
    model does not have is refused."""
    if cohort.class_names == names:
        return cohort
    if not set(cohort.class_names) <= set(names):
        raise MedtlError(f"{where}: classes {cohort.class_names} differ from the model's {names} "
                         "(set data.class_names)")
    index = [names.index(c) for c in cohort.class_names]
    return replace(cohort, items=[{**it, "label": index[it["label"]]} for it in cohort.items],
                   class_names=list(names))


def _check_evaluation_folder(out: Path, split: str) -> None:
    """Refuse, before any work, an ``out`` that cannot take an evaluation, or that holds a file of a name
    :func:`evaluate` writes without being an evaluation folder (its ``metrics.json``, written first,
    has ``evaluated_on``): a file medtl did not write is never replaced."""
    if out.exists() and not out.is_dir():
        raise MedtlError(f"{out}: is a file, not a folder; choose another --out")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MedtlError(f"{existing}: cannot write there (read-only or no permission); choose another --out")
    names = _evaluation_names(split)
    try:
        ours = "evaluated_on" in json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        ours = False
    clash = next((out / n for n in names if (out / n).exists()), None) if not ours else None
    if clash is not None:
        raise MedtlError(f"{clash}: exists and was not written by `medtl evaluate`; refusing to replace it: "
                         "move it or choose another --out")


#: The settings ``evaluate`` takes from overrides; the card fixes the rest (preprocessing, threshold, model).
EVALUATE_READS = ("data", "train.device", "train.seed", "train.batch_size", "eval.bootstrap")


def _check_evaluation_overrides(overrides: Sequence[str], tta: bool | None) -> None:
    """An override ``evaluate`` would not read (``eval.threshold=0.3``, ``preprocess.window=lung``) is refused:
    dropped silently, its metrics would look like the setting's."""
    reads = EVALUATE_READS + (("augment",) if tta else ())
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not any(key == r or key.startswith(r + ".") for r in reads):
            raise ConfigError(f"{item}: evaluate takes only data.*, train.device, train.seed, train.batch_size and "
                              "eval.bootstrap overrides (augment.* with test-time views on: --tta on); the "
                              "preprocessing and threshold are the model card's (train again to change them)")


def evaluate(run_dir: str | os.PathLike, data: str | None = None, split: str | None = None, out: str | None = None,
             overrides: Sequence[str] = (), bootstrap: int | None = None, progress: bool = True,
             tta: bool | None = None) -> dict[str, Any]:
    """Metrics (with 95% CIs) of a trained run on a dataset split, with the run's own preprocessing.

    ``data`` defaults to the training data, and ``split`` to its ``test`` split; other ``data`` (another
    site) is evaluated whole (``split="all"``) and without the run's ``data.filter``, which named
    the training data's columns. ``overrides`` are ``data.*`` items
    (e.g. ``data.filter.site=B``) or others of :data:`EVALUATE_READS`; any other is refused. With ``out``, writes ``metrics.json``,
    predictions and plots there. ``tta``: None averages the test-time views the card records
    (plain without); True the views of the run's training augmentation; False none.
    """
    from medtl.data import build_dataset, load_items
    from medtl.train.engine import predict_loader
    from medtl.train.metrics import evaluate_predictions
    from medtl.train.plots import save_evaluation_plots

    run_dir = Path(run_dir)
    card = read_card(run_dir)
    cfg_path = run_dir / "config.yaml"
    split = split or ("all" if data else "test")
    if split not in ("train", "val", "test", "all"):
        raise MedtlError(f"split {split!r}: choose train, val, test or all")
    if isinstance(overrides, (str, bytes)):  # spread below, "data.filter.site=B" was refused as override 'd'
        raise ConfigError(f"overrides are a list of key=value items, got the text {overrides!r} "
                          f"(write [{overrides!r}])")
    _check_evaluation_overrides(overrides, tta)
    if out:
        _check_evaluation_folder(Path(out), split)
    fresh = [f"data.path={json.dumps(str(data))}", "data.filter={}"] if data else []  # quoted: a path is not YAML
    cfg = load_config(cfg_path if cfg_path.is_file() else None, [*fresh, *overrides])
    device = resolve_device(cfg.train.device)
    model, card, prep = load_run(run_dir, device=str(device))
    if not data and cfg.data.path and not Path(cfg.data.path).expanduser().exists():
        raise MedtlError(f"{cfg.data.path}: the training data of {run_dir} is not there any more; "
                         "pass --data PATH (data=... from Python) to evaluate on it where it is now")
    with warnings.catch_warnings():  # the card fixes which class is which: the training's order warning is moot
        warnings.filterwarnings("ignore", message=r".*class names sorted alphabetically make")
        cohort = in_model_classes(load_items(cfg.data, seed=cfg.train.seed), card["class_names"], cfg.data.path)
    items = cohort.items if split == "all" else cohort.split(split)
    if not items:
        raise MedtlError(f"{cfg.data.path}: split {split!r} is empty")
    ds = build_dataset(items, prep.transforms(), cache="none")
    if tta is None:
        views = card_views(card)
    else:
        views = tta_views(cfg.augment, cfg.preprocess.spatial_dims) if tta else None
    try:
        probs, labels, _ = predict_loader(model, _loader(ds, cfg), device, progress=progress, desc="evaluate",
                                          views=views)
    except DimensionError as exc:  # other data mixing 2D and 3D: say how to keep the model's kind
        trained = (card.get("training", {}).get("data", {}) or {}).get("filter") or {}
        how = " ".join(f"data.filter.{k}={v}" for k, v in trained.items())
        raise DimensionError(exc.path, exc.reason, "keep only the images this model takes with a "
                             "data.filter.COLUMN=VALUE override" + (f"; it was trained with {how}" if how else "")) \
            from None
    n_boot = cfg.eval.bootstrap if bootstrap is None else bootstrap
    metrics = evaluate_predictions(labels, probs, threshold=card.get("threshold"), bootstrap=n_boot,
                                   seed=cfg.train.seed, class_names=card["class_names"])
    metrics["class_names"] = list(card["class_names"])  # the confusion matrix's rows and columns, in order
    # Which data this is (kept in metrics.json): the dataset (absolute: it names the file from any folder), split,
    # case count and data.* overrides.
    metrics["evaluated_on"] = {"data": os.path.abspath(Path(cfg.data.path).expanduser()), "split": split, "n": len(items),
                               "overrides": list(overrides), "tta_views": len(views) if views else 0}
    if out:
        def write(folder: Path) -> None:
            write_json(folder / "metrics.json", metrics)
            _write_predictions(folder / f"predictions_{split}.csv", items, labels, probs, card["class_names"],
                               metrics["threshold"])
            save_evaluation_plots(labels, probs, card["class_names"], folder, prefix=f"{split}_",
                                  threshold=0.5 if card.get("threshold") is None else card["threshold"])

        _write_evaluation(Path(out), split, write)
    return metrics
