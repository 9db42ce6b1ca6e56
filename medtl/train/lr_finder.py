"""A learning-rate range test (Smith 2015; fastai's ``lr_find``): train briefly while the learning
rate grows exponentially, and suggest the rate where the loss falls fastest for longest.

It trains a copy of the model, so the model passed in is left exactly as it was. The
suggestion is fastai's "valley" rule (the middle of the longest stretch of decreasing
smoothed loss), written here because fastai pulls torchvision and its Learner.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch
from torch import nn

from medtl.train.config import TrainConfig

#: Default sweep: from ``START`` to ``END`` in ``STEPS`` optimiser steps.
START, END, STEPS = 1e-6, 1.0, 100


@dataclass
class LRFinderResult:
    lrs: list[float]  #: learning rate of each step (the peak-group rate)
    losses: list[float]  #: smoothed (bias-corrected EMA) training loss of each step
    suggestion: float  #: the valley rule's pick
    start: float
    end: float
    stopped_early: bool  #: the loss diverged (over 4x its minimum) before ``end``

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def valley(lrs: Iterable[float], losses: Iterable[float]) -> float:
    """fastai's valley rule: the learning rate at ``start + len/3 + len/6`` of the longest run of
    (not necessarily adjacent) decreasing losses, i.e. about halfway down the steepest long slope."""
    lrs, losses = list(lrs), list(losses)
    n = len(losses)
    if n == 0:
        raise ValueError("valley: no losses")
    longest = [1] * n
    best_start = best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[best_end] < longest[i]:
            best_end, best_start = i, i - longest[i]
    section = (best_end - best_start) / 3
    return float(lrs[min(n - 1, best_start + int(section) + int(section / 2))])


def find_lr(model: nn.Module, loader: Iterable[Any], cfg: TrainConfig, device: torch.device | str = "cpu", *,
            start: float = START, end: float = END, steps: int = STEPS, beta: float = 0.98,
            criterion: nn.Module | None = None, pretrained: bool = False) -> LRFinderResult:
    """Sweep the learning rate of ``cfg``'s optimiser (AdamW with its parameter groups and
    weight decay, the stages trainable as in the recipe's last epoch, frozen stages' BatchNorm
    statistics kept as ``fit`` keeps them) from ``start`` to ``end``
    over ``steps`` batches of ``loader`` (cycled), on a copy of ``model``.

    Each step is ``fit``'s own :func:`~medtl.train.engine.train_step`, so ``cfg``'s mixup or cutmix
    shape the loss as in training; pass ``fit``'s ``criterion`` (class weights, label smoothing) and
    ``pretrained`` (the L2-SP groups) for the same reason. The sweep runs in float32."""
    from medtl.train.engine import train_step
    from medtl.train.strategy import Strategy, build_optimizer

    if not 0 < start < end:
        raise ValueError(f"find_lr: need 0 < start < end, got {start}, {end}")
    if steps < 5:
        raise ValueError(f"find_lr: need at least 5 steps, got {steps}")
    device = torch.device(device)
    net = copy.deepcopy(model).to(device)
    Strategy(cfg).train_mode(net, max(cfg.epochs - 1, 0))  # frozen stages' BatchNorm in eval, as fit has it
    sweep_cfg = cfg.model_copy(update={"lr": 1.0})  # group rates relative to the peak; scaled below
    optimizer = build_optimizer(net, sweep_cfg, pretrained)
    base = [g["lr"] for g in optimizer.param_groups]
    criterion = criterion or nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    ratio = (end / start) ** (1.0 / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    avg, best, stopped = 0.0, math.inf, False
    batches = _cycle(loader)
    for i in range(steps):
        lr = start * ratio ** i
        for g, b in zip(optimizer.param_groups, base):
            g["lr"] = lr * b
        batch = next(batches)
        x = batch["image"].to(device)
        y = torch.as_tensor(batch["label"]).long().view(-1).to(device)
        value = float(train_step(net, x, y, criterion, optimizer, scaler, None, cfg.mixup, cfg.cutmix))
        if not math.isfinite(value):
            stopped = True
            break
        avg = beta * avg + (1 - beta) * value
        smooth = avg / (1 - beta ** (i + 1))
        lrs.append(lr)
        losses.append(smooth)
        best = min(best, smooth)
        if i > 10 and smooth > 4 * best:
            stopped = True
            break
    if len(losses) < 5:
        from medtl.errors import MedtlError

        # only a NaN/inf loss stops the sweep this early (divergence is judged after 10 steps)
        raise MedtlError(f"the learning-rate range test's training loss was not a number after {i + 1} steps from lr "
                         f"{start:g}: check that no image holds NaN or inf values (or sweep from a lower start)")
    return LRFinderResult(lrs, losses, valley(lrs, losses), start, end, stopped)


def _cycle(loader: Iterable[Any]):
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("find_lr: the loader gave no batch")
