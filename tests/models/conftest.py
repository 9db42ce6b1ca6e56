"""Helpers for the models tests: torchvision-format checkpoints with random values."""

from __future__ import annotations

import pytest
import torch

from medtl import models
from medtl.models._torchvision_keys import fake_state_dict

ARCHS = ["resnet18", "resnet34", "resnet50", "densenet121", "efficientnet_lite0"]

_CACHE: dict[tuple[str, bool], dict[str, torch.Tensor]] = {}


def fake(arch: str, legacy: bool = False) -> dict[str, torch.Tensor]:
    """Published-format checkpoint of ``arch`` (random, cached per session; do not mutate)."""
    key = (arch, legacy)
    if key not in _CACHE:
        _CACHE[key] = fake_state_dict(arch, seed=1, legacy=legacy)
    return _CACHE[key]


def loaded(arch: str, **kwargs) -> models.Backbone:
    """``create(arch, **kwargs)`` with the fake ImageNet checkpoint loaded, in eval mode."""
    model = models.create(arch, **kwargs)
    models.load_pretrained(model, fake(arch, legacy=arch == "densenet121"))
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
