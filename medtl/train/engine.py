"""The training loop: one ``fit`` for CPU, one GPU or many (``torchrun``), resumable exactly.

Speed on a GPU comes from AMP (bf16 where supported), ``channels_last``,
optional ``torch.compile``, pinned memory and loader workers; on a CPU from
cached preprocessing, ``channels_last`` in 2D and using every core for the model.

Exact resume: every epoch reseeds the shuffling, the augmentation and torch's
global RNG from ``seed + epoch``, and the checkpoint holds the model, optimizer,
scheduler and scaler state, so a run stopped after epoch *e* and resumed ends
with the same weights as one that never stopped (CPU, fixed seed).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import numpy as np
import torch
from torch import nn
from monai.data import DataLoader  # seeds random transforms per worker (torch's does not)
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from medtl.config import Config
from medtl.data.datasets import weighted_sampler
from medtl.runs import memory_format, resolve_device, save_weights, to_memory_format
from medtl.train.logger import MetricLogger
from medtl.train.config import TrainConfig
from medtl.train.strategy import (Strategy, build_optimizer, build_scheduler, decay_toward_start,
                                  frozen_batchnorms, starting_points)
from medtl.transforms.tta import View, tta_probabilities

LOWER_IS_BETTER = {"loss", "nll", "brier", "ece"}


# --- devices, precision, distributed ---------------------------------------------------------

def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16 on GPU; no autocast on CPU unless asked."""
    if cfg.amp == "off":
        return None
    if cfg.amp == "bf16":
        return torch.bfloat16
    if cfg.amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    return info


def loader_workers(device: torch.device, requested: int) -> int:
    """DataLoader workers: what the config says, else enough to feed a GPU; none on a small CPU box
    (there every core is better spent on the model, and preprocessing is cached).

    Not the threads that fill the preprocessing cache (:func:`medtl.data.cache_workers`).
    """
    if requested >= 0:
        return requested
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, max(1, cpus - 1))
    return 0 if cpus <= 4 else 2


# --- loop pieces -----------------------------------------------------------------------------

def _to_device(batch: Any, device: torch.device,
               memory_format: torch.memory_format = torch.contiguous_format) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch["image"], batch["label"]
    x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    return x, torch.as_tensor(y).long().view(-1).to(device, non_blocking=True)


@torch.no_grad()
def predict_loader(model: nn.Module, loader: DataLoader, device: torch.device,
                   amp: torch.dtype | None = None, memory_format: torch.memory_format = torch.contiguous_format,
                   progress: bool = False, desc: str = "predict",
                   views: Sequence[View] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Class probabilities, labels and mean cross-entropy over a loader; with ``views``, the
    probabilities are averaged over those test-time views and the loss is their negative log."""
    model.eval()
    probs, labels, loss_sum, n = [], [], 0.0, 0
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        x, y = _to_device(batch, device, memory_format)
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            logits = model(x)
            p = tta_probabilities(model, x, views, logits=logits) if views else None
        if p is None:
            # float64: float32 softmax rounds every logit gap above ~17 to p = 1, which ties the
            # confident cases and hides their ranking from AUC (float64 keeps it up to ~36)
            p = torch.softmax(logits.double(), dim=1)
        if views:
            loss_sum += float(nn.functional.nll_loss(torch.log(p.clamp_min(1e-300)), y, reduction="sum"))
        else:
            loss_sum += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
        n += len(y)
        probs.append(p.cpu().numpy())
        labels.append(y.cpu().numpy())
    if n == 0:
        return np.zeros((0, 0)), np.zeros(0, dtype=int), float("nan")
    return np.concatenate(probs), np.concatenate(labels), loss_sum / n


def mixup(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018): every image blended with a partner from the same batch.

    Returns the mixed batch, the partners' indices and the weight ``lam ~ Beta(alpha, alpha)``;
    the loss takes ``lam * loss(y) + (1 - lam) * loss(y[partner])``. By hand rather than MONAI's
    ``MixUp``: that one wants one-hot labels and a fixed batch size, while mixing the two losses keeps
    integer labels, class weights and label smoothing as they are. Drawn from torch's CPU generator,
    which each epoch reseeds, so a resumed run mixes the same pairs.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(len(x)).to(x.device)
    return lam * x + (1 - lam) * x[partner], partner, lam


def cutmix(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al. 2019): a box of every image replaced by the same box of a partner's.

    2D or 3D. Each side of the box is the fraction ``(1 - lam) ** (1 / dims)`` of the image's, with
    ``lam ~ Beta(alpha, alpha)``, centred anywhere and clipped at the border; the returned weight is the
    share of pixels the image keeps after clipping, so the loss ``lam * loss(y) + (1 - lam) *
    loss(y[partner])`` matches what the network sees. By hand rather than MONAI's ``CutMix``: since 1.4
    it mixes labels with the image mask (Project-MONAI/MONAI#8137), its label weight ignores the
    clipping, and it wants one-hot labels; same generator as :func:`mixup`, so resume is exact.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(len(x)).to(x.device)
    dims = x.shape[2:]
    side = (1 - lam) ** (1 / len(dims))
    box = []
    for d in dims:
        centre, half = int(torch.randint(d, ())), round(d * side) / 2
        box.append(slice(max(int(centre - half), 0), min(int(centre + half), d)))
    mixed = x.clone()
    mixed[(slice(None), slice(None), *box)] = x[(partner, slice(None), *box)]  # the partners' box only
    cut = math.prod(b.stop - b.start for b in box)
    return mixed, partner, 1 - cut / math.prod(dims)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, amp: torch.dtype | None,
               mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> torch.Tensor:
    """One optimisation step (autocast when ``amp``; loss scaling for fp16; :func:`mixup` when
    ``mixup_alpha`` > 0, :func:`cutmix` when ``cutmix_alpha`` > 0); returns the detached loss."""
    partner, lam = None, 1.0
    if mixup_alpha > 0:
        x, partner, lam = mixup(x, mixup_alpha)
    elif cutmix_alpha > 0:
        x, partner, lam = cutmix(x, cutmix_alpha)
    with torch.autocast(x.device.type, dtype=amp) if amp else contextlib.nullcontext():
        out = model(x).float()
        loss = criterion(out, y) if partner is None else lam * criterion(out, y) + (1 - lam) * criterion(out, y[partner])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def make_criterion(tc: TrainConfig, class_weights: torch.Tensor | None, device: torch.device) -> nn.Module:
    """The training loss: cross-entropy with ``train.label_smoothing`` and ``train.balance=loss``'s class
    weights (``fit`` and the learning-rate range test take the same)."""
    return nn.CrossEntropyLoss(weight=None if class_weights is None else class_weights.to(device),
                               label_smoothing=tc.label_smoothing)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of ``n_train`` images: the last partial batch is dropped when
    there is more than one batch (a batch of one would break BatchNorm), as the loader below does."""
    return n_train // batch_size if _drops_last(n_train, batch_size) else 1


def _drops_last(n_train: int, batch_size: int) -> bool:
    return n_train > batch_size


def make_train_loader(train_ds, cfg: Config, device: torch.device, dist_info: DistInfo | None = None,
                      sample_weights: np.ndarray | None = None):
    """``(loader, sampler, generator)`` for training; reseed ``generator`` per epoch for exact resume."""
    tc = cfg.train
    dist_info = dist_info or DistInfo()
    generator = torch.Generator()
    if dist_info.enabled:
        sampler = DistributedSampler(train_ds, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                     shuffle=True, seed=tc.seed)
    elif sample_weights is not None:
        sampler = weighted_sampler(sample_weights, generator)
    else:
        sampler = torch.utils.data.RandomSampler(train_ds, generator=generator)
    workers = loader_workers(device, cfg.data.num_workers)
    loader = DataLoader(train_ds, batch_size=tc.batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        drop_last=_drops_last(len(train_ds), tc.batch_size))
    return loader, sampler, generator


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics.

    torch's ``AveragedModel`` with timm's warm-up of the decay (``min(decay, (1 + n) / (10 + n))``
    after ``n`` updates), so the first steps, from a random head, are forgotten quickly.
    """
    def ema_avg(avg: torch.Tensor, new: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return avg * d + new * (1.0 - d)

    return torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_avg, use_buffers=True)


@dataclass
class FitState:
    """What a checkpoint carries besides tensors."""

    epoch: int = 0  #: next epoch to run
    best_score: float | None = None
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)
    bad_epochs: int = 0
    swa: dict | None = None  #: ``train.swa``: what was averaged and how the average validated
    soup: dict | None = None  #: ``train.soup``: the epochs in the soup and how it validated


def _monitored(tc: TrainConfig, row: dict[str, Any]) -> float | None:
    """The validation figure ``train.monitor`` names in an epoch's ``row``."""
    return row.get("val_loss" if tc.monitor == "loss" else f"val_{tc.monitor}")


def _summary(row: dict[str, Any]) -> dict[str, float]:
    """What a run records of a weight average's validation (``state.swa`` / ``state.soup``)."""
    return {k: v for k, v in row.items() if k in ("val_loss", "val_auc", "val_accuracy")}


def _better(score: float, best: float | None, monitor: str,
            loss: float | None = None, best_loss: float | None = None) -> bool:
    """Whether ``score`` beats ``best``; a tie goes to a validation ``loss`` lower by more than
    float rounding.

    A ranking metric ties easily on a small validation set (AUC 1.0 from the first epoch,
    while the probabilities are still all alike): the earliest epoch would win every tie. The
    margin keeps the choice from hanging on rounding (a distributed run sums in another order).
    """
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return False
    if best is None:
        return True
    if score == best:
        return loss is not None and best_loss is not None and loss < best_loss - 1e-6 * max(1.0, abs(best_loss))
    return score < best if monitor in LOWER_IS_BETTER else score > best


@dataclass
class _Fit:
    """What ``fit`` sets up once and every epoch uses (see :func:`_set_up`)."""

    cfg: TrainConfig
    dist: DistInfo
    device: torch.device
    amp: torch.dtype | None
    model: nn.Module
    step_model: nn.Module  #: what the train steps call: the model, compiled or DDP-wrapped
    train_loader: DataLoader
    sampler: torch.utils.data.Sampler
    generator: torch.Generator
    val_loader: DataLoader | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    strategy: Strategy
    state: FitState
    last_ckpt: Path
    logger: MetricLogger | None  #: on the main rank only
    ema: torch.optim.swa_utils.AveragedModel | None = None  #: ``train.ema``: what validation and checkpoints see
    swa: torch.optim.swa_utils.AveragedModel | None = None  #: ``train.swa``: the run's model at the end
    #: ``train.soup``: the best validation epochs so far, best first ({"epoch", "score", "weights"})
    soup_pool: list[dict] = field(default_factory=list)
    #: ``train.l2sp``: each group's starting weights (None where the group has no ``l2sp``)
    start: list[list[torch.Tensor] | None] | None = None
    trainable_prev: list[str] | None = None
    memory_format: torch.memory_format = torch.contiguous_format  #: of the model and every batch

    @property
    def swa_from(self) -> int:
        """The first epoch (0-based) whose end-of-epoch weights go into ``train.swa``'s average."""
        return self.cfg.epochs - math.ceil(self.cfg.swa * self.cfg.epochs) if self.cfg.swa else self.cfg.epochs

    @property
    def eval_model(self) -> nn.Module:
        """The model validation scores and ``on_best`` saves: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model


def fit(
    model: nn.Module,
    train_ds: torch.utils.data.Dataset,
    val_ds: torch.utils.data.Dataset | None,
    cfg: Config,
    out_dir: Path,
    *,
    train_transform: Any = None,
    class_weights: torch.Tensor | None = None,
    sample_weights: np.ndarray | None = None,
    resume: bool = False,
    max_epochs_this_run: int | None = None,
    on_best: Callable[[nn.Module, int, dict], None] | None = None,
    progress: bool = True,
) -> FitState:
    """Train ``model`` per ``cfg.train``; keep the best validation checkpoint via ``on_best``.

    Writes ``out_dir/metrics.csv`` (+ TensorBoard events) and
    ``out_dir/checkpoints/last.pt`` after every epoch. ``resume=True`` continues
    from that checkpoint. ``max_epochs_this_run`` stops early (used to test resume).
    """
    run = _set_up(model, train_ds, val_ds, cfg, out_dir, class_weights, sample_weights, resume)
    tc, state = run.cfg, run.state
    stop_at = tc.epochs if max_epochs_this_run is None else min(tc.epochs, state.epoch + max_epochs_this_run)
    if _patience_spent(run):  # an early-stopped run resumed (killed while it was evaluated): it trains no more
        stop_at = state.epoch
    for epoch in range(state.epoch, stop_at):
        row, seconds = _run_epoch(run, epoch, train_transform, progress)
        improved = _record_epoch(run, epoch, row, on_best)
        if progress and run.dist.is_main:
            _print_epoch(tc, epoch, row, seconds, improved)
        if _stop_early(run, progress):
            break
    finished = state.epoch >= tc.epochs or _patience_spent(run)
    if run.swa is not None and run.dist.is_main and finished:
        _finish_swa(run, on_best, progress)
    if tc.soup > 1 and run.dist.is_main and finished:
        _finish_soup(run, on_best, progress)
    if run.logger is not None:
        run.logger.close()
    return state


def _set_up(model: nn.Module, train_ds: torch.utils.data.Dataset, val_ds: torch.utils.data.Dataset | None,
            cfg: Config, out_dir: Path, class_weights: torch.Tensor | None, sample_weights: np.ndarray | None,
            resume: bool) -> _Fit:
    """Join the process group, place the model, build loaders, optimiser, schedule and metric log;
    restore ``last.pt`` on resume, else re-estimate BatchNorm when asked; compile when asked."""
    tc = cfg.train
    dist_info = init_distributed(tc.device)
    device = resolve_device(tc.device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    amp = amp_dtype(tc, device)
    model.to(device)
    fmt = memory_format(device, cfg.preprocess.spatial_dims) if tc.channels_last else torch.contiguous_format
    to_memory_format(model, fmt)

    train_loader, sampler, generator = make_train_loader(train_ds, cfg, device, dist_info, sample_weights)
    val_loader = (DataLoader(val_ds, batch_size=tc.batch_size * 2, shuffle=False, num_workers=train_loader.num_workers,
                             pin_memory=device.type == "cuda") if val_ds is not None and len(val_ds) else None)

    pretrained = cfg.model.weights is not None
    optimizer = build_optimizer(model, tc, pretrained)
    start = starting_points(optimizer) if tc.l2sp and pretrained else None  # before a resume loads last.pt
    scheduler = build_scheduler(optimizer, tc, tc.epochs * len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    criterion = make_criterion(tc, class_weights, device)
    last_ckpt = out_dir / "checkpoints" / "last.pt"
    ema = make_ema(model, tc.ema) if tc.ema else None  # its first update copies the model
    swa = torch.optim.swa_utils.AveragedModel(model, use_buffers=False) if tc.swa else None  # equal weights
    if tc.soup > 1 and (val_loader is None) and dist_info.is_main:
        from medtl.errors import MedtlError

        raise MedtlError("train.soup needs a validation split to choose its epochs (add one, or set train.soup=0)")
    soup_pool: list[dict] = []
    state = (load_checkpoint(last_ckpt, model, optimizer, scheduler, scaler, ema, swa,
                             soup_pool if tc.soup > 1 else None) if resume else FitState())
    steps = tc.epochs * len(train_loader)
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and scheduler.total_steps != steps:
        from medtl.errors import MedtlError  # restored from last.pt: it would stop at its own step count

        raise MedtlError(f"{last_ckpt}: the run's one-cycle schedule spans {scheduler.total_steps} steps, resumed "
                         f"with {steps} ({tc.epochs} epochs of {len(train_loader)}); resume with the data and "
                         "settings the run started with")
    logger = MetricLogger(out_dir / "metrics.csv", tensorboard_dir=out_dir / "tensorboard", resume=resume,
                          start_epoch=state.epoch + 1 if resume else None) if dist_info.is_main else None

    if tc.bn_momentum is not None:
        from medtl.models.batchnorm import set_bn_momentum

        set_bn_momentum(model, tc.bn_momentum)
    if tc.batchnorm == "reestimate" and not resume:
        from medtl.models.batchnorm import reestimate_batchnorm

        reestimate_batchnorm(model, train_loader, device)
    # torch.compile: the first steps are slow (compilation), later ones fast; eval uses the plain module.
    step_model: nn.Module = torch.compile(model) if tc.compile and not dist_info.enabled else model
    return _Fit(tc, dist_info, device, amp, model, step_model, train_loader, sampler, generator, val_loader,
                optimizer, scheduler, scaler, criterion, Strategy(tc, pretrained=pretrained),
                state, last_ckpt, logger, ema, swa, soup_pool, start, memory_format=fmt)


def _run_epoch(run: _Fit, epoch: int, train_transform: Any, progress: bool) -> tuple[dict[str, Any], float]:
    """Train one epoch (reseeded from ``seed + epoch`` for exact resume), validate on the main rank.

    Returns the epoch's metrics row and its training time in seconds.
    """
    tc, model, device = run.cfg, run.model, run.device
    seed = tc.seed + epoch
    torch.manual_seed(seed)
    run.generator.manual_seed(seed)
    if isinstance(run.sampler, DistributedSampler):
        run.sampler.set_epoch(epoch)
    if train_transform is not None and hasattr(train_transform, "set_random_state"):
        train_transform.set_random_state(seed=seed)
    trainable = run.strategy.train_mode(model, epoch)
    if run.dist.enabled and trainable != run.trainable_prev:
        # DDP hooks only the parameters that require grad when it wraps: re-wrap on change.
        run.step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    run.trainable_prev = trainable

    t0 = time.perf_counter()
    loss_sum, seen = 0.0, 0
    lr = max(g["lr"] for g in run.optimizer.param_groups)  #: the rate of the epoch's last step (its row's ``lr``)
    bar = tqdm(run.train_loader, desc=f"epoch {epoch + 1}/{tc.epochs}",
               disable=not (progress and run.dist.is_main), leave=False, dynamic_ncols=True)
    for step, batch in enumerate(bar, 1):
        x, y = _to_device(batch, device, run.memory_format)
        loss = train_step(run.step_model, x, y, run.criterion, run.optimizer, run.scaler, run.amp,
                          tc.mixup, tc.cutmix)
        value = float(loss)
        if not math.isfinite(value) and not run.scaler.is_enabled():  # fp16's scaler skips such steps itself
            _diverged(run, f"the training loss is {value} at epoch {epoch + 1}, step {step}")
        if run.start is not None:
            decay_toward_start(run.optimizer, run.start)
        lr = max(g["lr"] for g in run.optimizer.param_groups)
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update_parameters(model)
        loss_sum += value * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    train_time = time.perf_counter() - t0
    if run.swa is not None and epoch >= run.swa_from:
        run.swa.update_parameters(model)

    row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                           "lr": lr,
                           "train_images_per_s": seen * run.dist.world_size / max(train_time, 1e-9),
                           "trainable_stages": len(trainable)}
    if run.val_loader is not None and run.dist.is_main:
        row.update(_validate(run))
    return row, train_time


def _diverged(run: _Fit, what: str) -> NoReturn:
    """Stop a run whose weights stopped being numbers, before anything of it is saved (``last.pt`` and
    ``model.safetensors`` keep the last finished epoch and the best one)."""
    from medtl.errors import MedtlError

    raise MedtlError(f"{what}: training diverged, nothing of this epoch was saved; lower train.lr (now "
                     f"{run.cfg.lr:g}) or let a range test choose it (train.lr=auto), and check that no image "
                     "holds NaN or inf values")


def _validate(run: _Fit, model: nn.Module | None = None) -> dict[str, float]:
    """``val_loss`` and ``val_<metric>`` of every numeric classification metric on the validation loader,
    for ``model`` (default: the run's :attr:`_Fit.eval_model`)."""
    from medtl.train.metrics import classification_metrics

    model = run.eval_model if model is None else model
    probs, labels, val_loss = predict_loader(model, run.val_loader, run.device, run.amp, run.memory_format)
    if not np.isfinite(probs).all():
        _diverged(run, "the validation outputs are not finite numbers")
    out = {"val_loss": val_loss}
    for k, v in classification_metrics(labels, probs).items():
        if isinstance(v, (int, float)) and k != "n":
            out[f"val_{k}"] = float(v)
    return out


def _record_epoch(run: _Fit, epoch: int, row: dict[str, Any],
                  on_best: Callable[[nn.Module, int, dict], None] | None) -> bool:
    """Add ``row`` to the history; on the main rank track the best score (``on_best`` when it
    improves, else one more bad epoch), append ``row`` to ``metrics.csv`` and write ``last.pt``.

    Returns whether the monitored score improved (always False off the main rank).
    """
    tc, state = run.cfg, run.state
    state.history.append(row)
    state.epoch = epoch + 1
    if not run.dist.is_main:
        return False
    if run.val_loader is None:  # no validation: the lowest training loss is the best
        score, monitor = -row["train_loss"], "auc"
    else:
        score, monitor = _monitored(tc, row), tc.monitor
    best_row = next((r for r in state.history if r.get("epoch") == state.best_epoch), {})
    improved = _better(score, state.best_score, monitor, row.get("val_loss"), best_row.get("val_loss"))
    if tc.soup > 1 and run.val_loader is not None:
        from medtl.train.soup import keep_best

        run.soup_pool = keep_best(run.soup_pool, epoch + 1, score, run.eval_model.state_dict(), tc.soup,
                                  higher_is_better=monitor not in LOWER_IS_BETTER)
    if improved:
        state.best_score, state.best_epoch, state.bad_epochs = float(score), epoch + 1, 0
        if on_best is not None:
            on_best(run.eval_model, epoch + 1, row)
    else:
        state.bad_epochs += 1
    if tc.keep_epochs:
        save_weights(run.eval_model, run.last_ckpt.parent / f"epoch_{epoch + 1:03d}.safetensors")
    run.logger.log(**row)
    save_checkpoint(run.last_ckpt, run.model, run.optimizer, run.scheduler, run.scaler, state, run.ema, run.swa,
                    run.soup_pool if run.cfg.soup > 1 else None)
    return improved


def _finish_swa(run: _Fit, on_best: Callable[[nn.Module, int, dict], None] | None, progress: bool) -> None:
    """Make ``train.swa``'s average the run's model: recompute its BatchNorm statistics over one pass of
    the training loader (averaged weights do not match any epoch's running statistics), validate it and
    hand it to ``on_best`` in place of the best epoch; ``state.swa`` records what was averaged."""
    from medtl.models.batchnorm import reestimate_batchnorm

    state, averaged = run.state, int(run.swa.n_averaged)
    if averaged == 0:  # stopped early before the averaging began: the best epoch stays the model
        return
    swa_model = run.swa.module
    # only the statistics that trained: a frozen stage's (linear, batchnorm=freeze) stay those the head learnt on
    # (AveragedModel copies the model's buffers at every update)
    keep = frozen_batchnorms(swa_model, run.strategy.trainable_stages(swa_model, state.epoch - 1), run.cfg.batchnorm)
    reestimate_batchnorm(swa_model, run.train_loader, run.device, keep=keep)
    row = _validate(run, swa_model) if run.val_loader is not None else {}
    state.swa = {"from_epoch": run.swa_from + 1, "epochs_averaged": averaged, **_summary(row)}
    state.best_epoch = state.epoch
    score = _monitored(run.cfg, row)
    state.best_score = float(score) if score is not None else state.best_score
    if progress:
        shown = " ".join(f"{k}={v:.4f}" for k, v in state.swa.items() if k.startswith("val_"))
        tqdm.write(f"weight average of epochs {run.swa_from + 1}-{state.epoch} ({averaged}) {shown}")
    if on_best is not None:
        on_best(swa_model, state.epoch, row)


def _finish_soup(run: _Fit, on_best: Callable[[nn.Module, int, dict], None] | None, progress: bool) -> None:
    """Make ``train.soup``'s greedy soup of the kept epochs the run's model: validate each candidate
    average, hand the soup to ``on_best`` in place of the best epoch; ``state.soup`` records it."""
    import copy

    from medtl.train.soup import greedy_soup

    tc, state = run.cfg, run.state
    if not run.soup_pool:
        return
    model = copy.deepcopy(run.eval_model)
    def score_of(weights: dict) -> float:
        model.load_state_dict(weights)
        score = _monitored(tc, _validate(run, model))
        return float("nan") if score is None else score

    weights, epochs, score = greedy_soup(run.soup_pool, score_of, higher_is_better=tc.monitor not in LOWER_IS_BETTER)
    model.load_state_dict(weights)
    row = _validate(run, model)  # once more, for every metric of the soup (a few seconds)
    state.soup = {"epochs": epochs, "considered": [e["epoch"] for e in run.soup_pool], **_summary(row)}
    state.best_score = float(score)
    if progress:
        shown = " ".join(f"{k}={v:.4f}" for k, v in state.soup.items() if k.startswith("val_"))
        tqdm.write(f"soup of epochs {', '.join(map(str, epochs))} (of {len(run.soup_pool)} kept) {shown}")
    if on_best is not None:
        on_best(model, state.best_epoch, row)


def _patience_spent(run: _Fit) -> bool:
    return bool(run.cfg.patience) and run.state.bad_epochs >= run.cfg.patience


def _print_epoch(tc: TrainConfig, epoch: int, row: dict[str, Any], seconds: float, improved: bool) -> None:
    """One progress line: the epoch's losses, AUC and accuracy, its time, and whether it is the best."""
    shown = {k: f"{v:.4f}" for k, v in row.items() if k in ("train_loss", "val_loss", "val_auc", "val_accuracy")}
    tqdm.write(f"epoch {epoch + 1}/{tc.epochs} " + " ".join(f"{k}={v}" for k, v in shown.items())
               + f" ({seconds:.0f}s{', best' if improved else ''})")


def _stop_early(run: _Fit, progress: bool) -> bool:
    """Whether ``patience`` epochs passed without improvement; under DDP every rank takes rank 0's count."""
    tc, state = run.cfg, run.state
    if run.dist.enabled:
        import torch.distributed as dist

        flag = torch.tensor([state.bad_epochs], dtype=torch.int64)
        dist.broadcast(flag, src=0)
        state.bad_epochs = int(flag)
        dist.barrier()
    if _patience_spent(run):
        if progress and run.dist.is_main:
            tqdm.write(f"early stopping: no {tc.monitor} improvement for {tc.patience} epochs")
        return True
    return False


# --- checkpoints ------------------------------------------------------------------------------

def save_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, scaler, state: FitState,
                    ema: torch.optim.swa_utils.AveragedModel | None = None,
                    swa: torch.optim.swa_utils.AveragedModel | None = None,
                    soup_pool: list[dict] | None = None) -> None:
    """Everything needed to resume (the weight averages and the soup's kept epochs too), written
    atomically (a kill never leaves a broken file)."""
    from medtl._fileutil import atomic_path

    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "state": {"epoch": state.epoch, "best_score": state.best_score, "best_epoch": state.best_epoch,
                  "history": state.history, "bad_epochs": state.bad_epochs},
    }
    if ema is not None:
        payload["ema"] = ema.state_dict()
    if swa is not None:
        payload["swa"] = swa.state_dict()
    if soup_pool is not None:
        payload["soup"] = soup_pool
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, scaler,
                    ema: torch.optim.swa_utils.AveragedModel | None = None,
                    swa: torch.optim.swa_utils.AveragedModel | None = None,
                    soup_pool: list[dict] | None = None) -> FitState:
    """Restore what :func:`save_checkpoint` wrote into these objects (``soup_pool`` filled in place)."""
    from medtl.errors import MedtlError, one_line

    if not path.is_file():
        raise MedtlError(f"{path}: no checkpoint to resume from (run without --resume to start afresh)")
    from medtl.models.weights import _unreadable_reason

    try:  # never weights_only=False, which torch's own message suggests: the file could run code
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/format failure is a bad file
        raise MedtlError(f"{path}: not a checkpoint medtl can resume from ({_unreadable_reason(exc)}); or start "
                         "afresh in another --out") from None
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        state = FitState(**payload["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise MedtlError(f"{path}: not a checkpoint of this run ({one_line(exc, 200)}); resume with the run's own "
                         "config.yaml, or start afresh in another --out") from None
    if ema is not None:
        if "ema" not in payload:
            raise MedtlError(f"{path}: this run has no weight average to resume (it was started without train.ema)")
        ema.load_state_dict(payload["ema"])
    if swa is not None:
        if "swa" not in payload:
            raise MedtlError(f"{path}: this run has no weight average to resume (it was started without train.swa)")
        swa.load_state_dict(payload["swa"])
    if soup_pool is not None:
        if "soup" not in payload:
            raise MedtlError(f"{path}: this run kept no epochs for a soup (it was started without train.soup)")
        soup_pool[:] = payload["soup"]
    return state
