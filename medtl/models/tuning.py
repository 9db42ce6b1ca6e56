"""Freezing and discriminative learning rates over a backbone's ``stages`` (fastai style)."""

from __future__ import annotations

from torch import nn

from medtl.errors import ArgumentError
from .backbone import Backbone

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm)


def _stage_names(model: Backbone) -> list[str]:
    return [name for name, _ in model.stages]


def freeze(model: Backbone, until: str | None = None, train_bn: bool = True) -> Backbone:
    """Stop gradients for every stage from the stem up to and including ``until``.

    ``until=None`` freezes everything but the head. With ``train_bn`` (fastai's
    default) normalisation layers inside frozen stages keep trainable affine
    parameters, which helps when the input statistics differ from ImageNet.
    Stages after ``until`` are made trainable. Returns ``model``.
    """
    names = _stage_names(model)
    if until is None:
        if "head" not in names:
            raise ArgumentError("model has no head: give until=<stage> (stages: " + ", ".join(names) + ")")
        until = names[names.index("head") - 1]
    if until not in names:
        raise ArgumentError(f"unknown stage {until!r}; stages are {names}")
    cut = names.index(until)
    for i, (_, stage) in enumerate(model.stages):
        frozen = i <= cut
        for p in stage.parameters():
            p.requires_grad = not frozen
        if frozen and train_bn:
            for m in stage.modules():
                if isinstance(m, _BN_TYPES):
                    for p in m.parameters():
                        p.requires_grad = True
    return model


def unfreeze(model: Backbone) -> Backbone:
    """Make every parameter trainable again. Returns ``model``."""
    for p in model.parameters():
        p.requires_grad = True
    return model


def param_groups(model: Backbone, lr: float, decay: float = 0.1, include_frozen: bool = False,
                 weight_decay: float | None = None) -> list[dict]:
    """Optimizer parameter groups with discriminative learning rates, one per stage.

    The last stage (the head, when present) gets ``lr``, the stem ``lr * decay``, and
    stages in between are spaced geometrically (fastai's ``slice(lr * decay, lr)``).
    Frozen parameters are left out unless ``include_frozen`` (a trainer that toggles
    freezing per epoch keeps one optimizer over everything); empty groups are dropped.
    With ``weight_decay``, each stage is split in two groups: weights with that decay,
    biases and normalisation parameters (1-D) without. Each group carries its stage ``name``.
    """
    for name, value in (("decay", decay), ("lr", lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentError(f"{name} must be a number, got {value!r}")
    if not 0 < decay <= 1:
        raise ArgumentError(f"decay must be in (0, 1], got {decay}")
    if not lr > 0:
        raise ArgumentError(f"lr must be positive, got {lr}")
    stages = model.stages
    n = len(stages)
    groups = []
    for i, (name, stage) in enumerate(stages):
        params = [p for p in stage.parameters() if include_frozen or p.requires_grad]
        factor = decay ** ((n - 1 - i) / (n - 1)) if n > 1 else 1.0
        if weight_decay is None:
            parts = [(params, {})]
        else:
            parts = [([p for p in params if p.ndim > 1], {"weight_decay": weight_decay}),
                     ([p for p in params if p.ndim <= 1], {"weight_decay": 0.0})]
        groups += [{"params": ps, "lr": lr * factor, "name": name, **extra} for ps, extra in parts if ps]
    return groups
