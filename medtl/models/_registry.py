"""Name -> builder registry (timm's ``register_model`` / ``list_models`` pattern)."""

from __future__ import annotations

import fnmatch
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])
_MODELS: dict[str, Callable[..., object]] = {}


def register_model(name: str | None = None) -> Callable[[F], F]:
    """Register a builder ``fn(spatial_dims, in_channels, num_classes, inflate) -> Backbone``.

    Used as ``@register_model()`` (the function's name) or ``@register_model("name")``.
    """

    def deco(fn: F) -> F:
        key = name or fn.__name__
        if key in _MODELS and _MODELS[key] is not fn:
            raise ValueError(f"model {key!r} is already registered")
        _MODELS[key] = fn
        return fn

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style ``pattern``."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def get_builder(name: str) -> Callable[..., object]:
    """The builder registered under ``name`` (ValueError naming the choices otherwise)."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {list_models()}") from None
