"""``create``: the one door to a backbone (timm's ``create_model``, Keras applications)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, WeightsError
from ._registry import get_builder
from .backbone import Backbone
from .inflate import InflateConfig
from .keymap import checkpoint_convention, load_pretrained
from .slices25d import SliceConfig, build_slice_model, is_slice_mode
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
    **inflate_options: Any,
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
        inflate: 3D only: a kernel mode (``"i3d"``, ``"central"``), ``"acs"`` (ACS
            convolutions: 2D kernels split over axial/coronal/sagittal planes, see
            :mod:`medtl.models.acs`), ``"2.5d"`` (slices through the 2D network, see
            :mod:`medtl.models.slices25d`), a dict of the mode's fields
            (:class:`~medtl.models.inflate.InflateConfig` or
            :class:`~medtl.models.slices25d.SliceConfig`), or a config.
        weights_dir: an extra folder searched first for checkpoint files.
        progress: show a progress bar when downloading.
        **inflate_options: extra fields of the ``inflate`` mode, e.g.
            ``create(..., inflate="2.5d", slice_channels=3, pool="attention")`` (how
            a config's ``model.kwargs`` reach the adaptation).
    """
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels={in_channels!r}: give the number of image channels (1 gray, 3 RGB, ...)")
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims={spatial_dims!r}: give 2 (images) or 3 (volumes)")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ConfigError(f"num_classes={num_classes!r}: give the number of classes (2 or more for a classifier), "
                          "or None for no head")
    if inflate_options:
        for key in inflate_options:
            if key in _OTHER_LIBRARIES_NAMES:
                raise ConfigError(f"create() has no argument {key!r} (timm/torchvision/Keras spelling): use "
                                  f"{_OTHER_LIBRARIES_NAMES[key]}")
        if spatial_dims != 3:
            raise ConfigError(f"options {', '.join(sorted(inflate_options))} (model.kwargs) apply to 3D adaptations "
                              "only: remove them, or use spatial_dims=3 (preprocess.spatial_dims: 3)")
        inflate = _with_options(inflate, inflate_options)
    if spatial_dims == 2 and inflate is not None and not is_slice_mode(inflate):
        InflateConfig.coerce(inflate)  # unused in 2D, but a misspelt mode in a config is refused, not kept
    builder = get_builder(name)
    model: Backbone
    target: Backbone  # where a 2D ImageNet checkpoint goes (the 2D network itself for 2.5D)
    if spatial_dims == 3 and is_slice_mode(inflate):
        model = build_slice_model(builder, in_channels, num_classes, SliceConfig.coerce(inflate))
        target = model.net
    else:
        cfg = InflateConfig.coerce(inflate) if spatial_dims == 3 else None
        model = builder(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, inflate=cfg)
        target = model
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        spec = get_spec(name)
        path = resolve(name, weights_dir=weights_dir, progress=progress)
        info = _load_file_into(model, target, path, spec.format)
        source = {"source": "imagenet", "name": spec.name, "file": spec.filename, "path": str(path),
                  "sha256": spec.sha256, "description": spec.description}
    else:
        path = checked_weights_file(weights)
        sha = sha256_file(path)
        named = next((s for s in WEIGHTS.values() if s.filename == path.name), None)
        if named is not None and sha != named.sha256:
            raise WeightsError(
                f"{path}: SHA-256 mismatch for {named.name} weights: expected {named.sha256}, actual {sha} "
                "(the file is damaged or not the published checkpoint)"
            )
        info = _load_file_into(model, target, path, None)
        source = {"source": "file", "name": named.name if named else None, "file": path.name, "path": str(path),
                  "sha256": sha, "description": named.description if named else ""}
    source["format"] = info["format"]
    model.card["weights"] = source
    return model


def checked_weights_file(weights: str | os.PathLike) -> Path:
    """``weights`` as a path to an existing file; a folder or a missing file is a one-line
    :class:`~medtl.errors.WeightsError` saying what to give instead."""
    path = Path(weights)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*") if p.suffix in (".safetensors", ".pth", ".pt"))
        hint = f": give the checkpoint file in it, e.g. {path / inside[0]}" if inside else " with no checkpoint in it"
        raise WeightsError(f"{path}: a folder, not a weights file{hint} (or 'imagenet', or None)")
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found (give 'imagenet', a checkpoint path or None)")
    return path


#: Arguments other model libraries name differently; without this they would reach the 3D options
#: (``**inflate_options``) and be reported as misplaced 3D settings.
_OTHER_LIBRARIES_NAMES = {
    "in_chans": "in_channels=",
    "pretrained": "weights='imagenet' (or weights=None)",
    "include_top": "num_classes=None for pooled features without a head",
    "classes": "num_classes=",
}


def _with_options(inflate: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """``inflate`` (name, dict or config) as a dict with ``options`` added."""
    if inflate is None:
        base: dict[str, Any] = {}
    elif isinstance(inflate, str):
        base = {"mode": inflate}
    elif hasattr(inflate, "to_dict"):
        base = inflate.to_dict()
    else:
        base = dict(inflate)
    return {**base, **options}


def _load_file_into(model: Backbone, target: Backbone, path: Path, fmt: str | None) -> dict[str, Any]:
    """:func:`_load` of the checkpoint file ``path``; a mismatch names the file."""
    state_dict = load_file(path)
    try:
        return _load(model, target, state_dict, fmt)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None


def _load(model: Backbone, target: Backbone, state_dict: Mapping[str, Any], fmt: str | None) -> dict[str, Any]:
    """Load a checkpoint: a saved medtl model into ``model``, a 2D ImageNet one into ``target``."""
    fmt = fmt or checkpoint_convention(state_dict)
    if target is model or fmt == "medtl":
        return load_pretrained(model, state_dict, fmt)
    info = load_pretrained(target, state_dict, fmt)
    model.card["input_adaptation"] = info["input_adaptation"]
    return {**info, "head": "new" if model.head is not None else None}
