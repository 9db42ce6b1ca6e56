"""The recipes shipped inside the package (``medtl/configs/*.yaml``): listed and found by name.

Kept apart from :mod:`medtl.config` so ``medtl configs`` answers without importing the config
schema (which pulls in torch and MONAI through the parts that own its sections).
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from medtl.errors import ConfigError, did_you_mean

__all__ = ["list_recipes", "recipe_path"]


def _recipe_dir() -> Any:
    return resources.files("medtl") / "configs"


def _about(text: str) -> str:
    """The first sentence of a recipe's opening comment (which may run over several lines)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#") or line.startswith("#   "):  # the end, or a command example
            break
        lines.append(line.lstrip("#").strip())
    about = " ".join(filter(None, lines))
    return re.split(r"(?<=\.)\s", about, maxsplit=1)[0]


def list_recipes() -> dict[str, str]:
    """``{name: first sentence of its opening comment}`` of the shipped recipes (``medtl configs``)."""
    return {entry.name[: -len(".yaml")]: _about(entry.read_text())
            for entry in sorted(_recipe_dir().iterdir(), key=lambda e: e.name) if entry.name.endswith(".yaml")}


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A YAML file path as given, else the shipped recipe of that name (``demo``, ``sample_tiny``...)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    name = p.name[: -len(".yaml")] if p.name.endswith(".yaml") else p.name
    recipes = list_recipes()
    if name in recipes and (len(p.parts) == 1 or p.parent.name == "configs"):
        with resources.as_file(_recipe_dir() / f"{name}.yaml") as found:
            return Path(found)
    hint = did_you_mean(name, recipes)
    raise ConfigError(f"{name_or_path}: no such config file or shipped recipe"
                      f"{hint or ''} (recipes: {', '.join(recipes)}; `medtl configs` lists them)")
