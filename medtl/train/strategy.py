"""Which parts of a pretrained network train, and how fast.

Four strategies over the backbone's ordered ``model.stages`` (stem ... head):

- ``linear``: the backbone stays frozen (BatchNorm statistics too, except that
  ``batchnorm: reestimate``, the automatic choice for 3D batches under :data:`SMALL_3D_BATCH`,
  first re-estimates them on the training data); only the head trains. Stochastic depth
  (``model.drop_path``) still drops blocks of frozen stages while they run in training mode.
- ``partial``: the last ``unfreeze_stages`` backbone stages train with the head.
- ``full``: everything trains at one learning rate.
- ``gradual``: fastai's ``fine_tune`` extended stage by stage: the head alone for
  ``freeze_epochs``, then one more stage (from the top) is unfrozen each epoch,
  with discriminative learning rates (each earlier stage gets ``lr_decay`` times
  the rate of the stage above it).

``full`` and ``partial`` from pretrained weights can first train the head alone for
``head_warmup`` of the epochs (linear probe, then fine-tune: LP-FT, Kumar et al. 2022).

A single optimizer holds every parameter from the start; freezing only toggles
``requires_grad`` (AdamW skips parameters without gradients), so the schedule and
optimizer state stay one continuous object that checkpoints and resumes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from medtl.models.tuning import freeze, param_groups, unfreeze
from medtl.train.config import TrainConfig


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    stages = getattr(model, "stages", None)
    if not stages:
        raise TypeError(f"{type(model).__name__} has no `stages`; build it with medtl.models.create")
    return list(stages)


def param_groups_for(model: nn.Module, cfg: TrainConfig, pretrained: bool = False) -> list[dict]:
    """AdamW parameter groups over every stage (frozen ones included), with the strategy's rates.

    ``linear``/``full`` use one rate; ``partial``/``gradual`` give each earlier stage
    ``lr_decay`` times the rate of the stage above it. Biases and normalisation
    weights get no weight decay (the usual AdamW practice). With ``cfg.l2sp`` and
    ``pretrained``, the backbone's kernel groups carry ``l2sp`` and no weight decay
    (:func:`decay_toward_start` pulls them toward their starting values instead).
    """
    stages = _stages(model)
    n = len(stages)
    decay = 1.0 if cfg.strategy in ("linear", "full") else cfg.lr_decay ** max(n - 1, 1)
    groups = param_groups(model, cfg.lr, decay=decay, include_frozen=True, weight_decay=cfg.weight_decay)
    if cfg.l2sp and pretrained:
        head = stages[-1][0]
        for g in groups:
            if g["name"] != head and all(p.ndim > 1 for p in g["params"]):
                g["weight_decay"], g["l2sp"] = 0.0, cfg.l2sp
    return groups


def starting_points(optimizer: torch.optim.Optimizer) -> list[list[torch.Tensor] | None]:
    """Copies of the parameters of each group that carries ``l2sp`` (None for the others), taken
    before training: what :func:`decay_toward_start` pulls toward."""
    return [[p.detach().clone() for p in g["params"]] if g.get("l2sp") else None for g in optimizer.param_groups]


@torch.no_grad()
def decay_toward_start(optimizer: torch.optim.Optimizer, start: list[list[torch.Tensor] | None]) -> None:
    """L2-SP's decoupled step, after the optimiser's: ``w -= lr * l2sp * (w - w_start)`` for each
    parameter of an ``l2sp`` group that took this step (a frozen one has no gradient and stays).
    A group restored from a checkpoint of a run started without ``l2sp`` has none, and stays so."""
    for group, points in zip(optimizer.param_groups, start):
        rate = group["lr"] * group.get("l2sp", 0.0)
        if points is None or not rate:
            continue
        for p, p0 in zip(group["params"], points):
            if p.grad is not None:
                p.lerp_(p0, rate)  # w + rate * (w_start - w), in place


@dataclass
class Strategy:
    """Applies a strategy's freezing for a given epoch."""

    cfg: TrainConfig
    pretrained: bool = True  #: ``head_warmup`` applies only to pretrained features (a random backbone has none to keep)

    @property
    def head_epochs(self) -> int:
        """Epochs at the start in which ``full``/``partial`` train only the head (``head_warmup``,
        rounded up, but never every epoch: the last one always trains what the strategy says)."""
        if not (self.pretrained and self.cfg.strategy in ("full", "partial") and self.cfg.head_warmup):
            return 0
        return min(math.ceil(self.cfg.head_warmup * self.cfg.epochs), self.cfg.epochs - 1)

    def trainable_stages(self, model: nn.Module, epoch: int) -> list[str]:
        """Names of the stages that train in ``epoch`` (0-based); the head always trains."""
        names = [name for name, _ in _stages(model)]
        backbone = names[:-1]
        strategy = self.cfg.strategy
        if epoch < self.head_epochs:
            k = 0
        elif strategy == "full":
            return names
        elif strategy == "linear":
            k = 0
        elif strategy == "partial":
            k = self.cfg.unfreeze_stages
        else:  # gradual
            k = max(0, epoch - self.cfg.freeze_epochs + 1)
        k = min(k, len(backbone))
        return (backbone[len(backbone) - k:] if k else []) + names[-1:]

    def apply(self, model: nn.Module, epoch: int) -> list[str]:
        """Set ``requires_grad`` for ``epoch``; return the trainable stage names.

        The trainable stages are always the top of the network, so this is
        :func:`medtl.models.freeze` up to the last frozen stage (normalisation layers
        frozen too: ``train_bn=False``), or :func:`medtl.models.unfreeze` when none is.
        """
        trainable = self.trainable_stages(model, epoch)
        names = [name for name, _ in _stages(model)]
        frozen = names[:len(names) - len(trainable)]
        if frozen:
            freeze(model, until=frozen[-1], train_bn=False)
        else:
            unfreeze(model)
        return trainable

    def train_mode(self, model: nn.Module, epoch: int) -> list[str]:
        """The model as ``epoch`` trains it: :meth:`apply`, then training mode with the BatchNorm of frozen
        stages in eval mode (:func:`set_batchnorm_mode`); returns the trainable stage names."""
        trainable = self.apply(model, epoch)
        model.train()
        set_batchnorm_mode(model, trainable, self.cfg.batchnorm)
        return trainable


def frozen_batchnorms(model: nn.Module, trainable: list[str], batchnorm: str) -> list[nn.Module]:
    """The BatchNorm layers whose running statistics stay as they are while the ``trainable`` stages
    train: those of frozen stages, or all with ``batchnorm='freeze'``."""
    keep = set(trainable)
    return [m for name, module in _stages(model) if batchnorm == "freeze" or name not in keep
            for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_batchnorm_mode(model: nn.Module, trainable: list[str], batchnorm: str) -> None:
    """Put BatchNorm of frozen stages (or all, with ``batchnorm='freeze'``) in eval mode.

    A frozen stage must keep its ImageNet running statistics, otherwise the
    "frozen" features would still drift with every training batch.
    """
    for m in frozen_batchnorms(model, trainable, batchnorm):
        m.eval()


#: 3D batches smaller than this re-estimate BatchNorm statistics under ``batchnorm: auto``.
SMALL_3D_BATCH = 8


def resolve_batchnorm(cfg: TrainConfig, spatial_dims: int) -> str:
    """The BatchNorm handling ``batchnorm: auto`` stands for (other values are returned as they are)."""
    if cfg.batchnorm != "auto":
        return cfg.batchnorm
    return "reestimate" if spatial_dims == 3 and cfg.batch_size < SMALL_3D_BATCH else "train"


def build_optimizer(model: nn.Module, cfg: TrainConfig, pretrained: bool = False) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups_for(model, cfg, pretrained), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """One-cycle, cosine with linear warm-up, or constant; stepped once per batch."""
    total_steps = max(1, total_steps)
    if cfg.schedule == "onecycle" and total_steps >= 4:
        # OneCycleLR divides by (pct_start * total_steps - 1): its warm-up needs at least two steps
        # and its annealing as many, or a tiny cohort (a few batches an epoch) divides by zero.
        pct = min(max(cfg.warmup, 2.0 / total_steps), 1.0 - 2.0 / total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps,
            pct_start=pct, anneal_strategy="cos", cycle_momentum=False)
    warm = int(cfg.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + float(torch.cos(torch.tensor(progress * torch.pi))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
