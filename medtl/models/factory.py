"""``create``: the one door to a backbone (timm's ``create_model``, Keras applications)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import WeightsError
from ._registry import get_builder
from .backbone import Backbone
from .inflate import InflateConfig
from .keymap import load_pretrained
from .weights import WEIGHTS, get_spec, load_file, resolve, sha256_file


def create(
    name: str,
    weights: str | os.PathLike | None = None,
    in_channels: int = 3,
    spatial_dims: int = 2,
    num_classes: int | None = 1000,
    inflate: str | Mapping[str, Any] | InflateConfig | None = "i3d",
    weights_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Backbone:
    """Build architecture ``name`` and optionally load weights.

    Args:
        name: a registered architecture (:func:`medtl.models.list_models`).
        weights: ``"imagenet"`` (the registered checkpoint, see
            :mod:`medtl.models.weights`), a checkpoint file path (torchvision,
            lukemelas or a saved medtl model; format detected from its keys), or None.
        in_channels: input channels; ImageNet stems are adapted (1: exact gray fold,
            N: repeat + 3/N scaling).
        spatial_dims: 2, or 3 for a 2D->3D inflated network.
        num_classes: head size; ``None`` gives no head (``forward`` returns pooled
            features). With ImageNet weights, 1000 keeps the ImageNet classifier;
            anything else gets a freshly initialised head.
        inflate: 3D only: a mode name (``"i3d"``, ``"central"``), a dict of
            :class:`~medtl.models.inflate.InflateConfig` fields, or a config.
        weights_dir: an extra folder searched first for checkpoint files.
        progress: show a progress bar when downloading.
    """
    cfg = InflateConfig.coerce(inflate) if spatial_dims == 3 else None
    model: Backbone = get_builder(name)(spatial_dims=spatial_dims, in_channels=in_channels,
                                        num_classes=num_classes, inflate=cfg)
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        spec = get_spec(name)
        path = resolve(name, weights_dir=weights_dir, progress=progress)
        info = load_pretrained(model, load_file(path), spec.format)
        source = {"source": "imagenet", "name": spec.name, "file": spec.filename, "path": str(path),
                  "sha256": spec.sha256, "description": spec.description}
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found (give 'imagenet', a checkpoint path or None)")
        sha = sha256_file(path)
        named = next((s for s in WEIGHTS.values() if s.filename == path.name), None)
        if named is not None and sha != named.sha256:
            raise WeightsError(
                f"{path}: SHA-256 mismatch for {named.name} weights: expected {named.sha256}, actual {sha} "
                "(the file is damaged or not the published checkpoint)"
            )
        info = load_pretrained(model, load_file(path), None)
        source = {"source": "file", "name": named.name if named else None, "file": path.name, "path": str(path),
                  "sha256": sha, "description": named.description if named else ""}
    source["format"] = info["format"]
    model.card["weights"] = source
    return model
