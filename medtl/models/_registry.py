"""Name -> builder registry (timm's ``register_model`` / ``list_models`` pattern)."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, TypeVar

from ..errors import ConfigError

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
    """The builder registered under ``name``; otherwise a :class:`~medtl.errors.ConfigError`
    naming the closest architecture and all the choices (a user's typo in ``model.arch``)."""
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list_models(), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown architecture {name!r} (model.arch); {hint}"
                          f"choose one of {', '.join(list_models())}") from None
