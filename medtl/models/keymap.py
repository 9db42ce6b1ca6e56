"""Strict loading of published ImageNet checkpoints into :class:`Backbone` models.

Three checkpoint formats: ``"torchvision"`` (ResNet, DenseNet; DenseNet's legacy
``norm.1`` names are renamed with torchvision's own regex), ``"lukemelas"``
(EfficientNet, blocks flat-indexed) and ``"medtl"`` (a saved :class:`Backbone`).
Loading is strict: every backbone tensor of the file must land on a backbone
parameter/buffer of matching (adapted) shape and every one of those must be filled;
the only tolerated gap is ``num_batches_tracked``, absent from old files. Anything
else raises :class:`~medtl.errors.WeightsError` naming a few offending keys.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from ..errors import WeightsError
from .adapt import adapt_input_conv, fold_gray_normalization
from .backbone import Backbone
from .inflate import inflate_kernel

# torchvision.models.densenet._load_state_dict's rename, 'denselayer1.norm.1.weight' ->
# 'denselayer1.norm1.weight' (also accepting num_batches_tracked, absent from the 2017 file)
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
_DENSENET_LAYER = re.compile(r"^(.*denselayer\d+)\.((?:norm|conv)[12]\..*)$")
_FLAT_BLOCK = re.compile(r"^_blocks\.(\d+)\.(.*)$")
_NESTED_BLOCK = re.compile(r"^net\._blocks\.(\d+)\.(\d+)\.")
HEAD_KEYS = ("head.weight", "head.bias")


def checkpoint_convention(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Key-naming convention of a state dict: ``"medtl"``, ``"lukemelas"`` or ``"torchvision"``.

    Read from the key names only. Not :func:`medtl.io.detect_format`, which tells image
    file formats apart.
    """
    keys = list(state_dict)
    if any(k.startswith("members.") for k in keys):
        members = len({k.split(".")[1] for k in keys if k.startswith("members.")})
        raise WeightsError(f"the weights of an ensemble of {members} models, not of one network: give one member's "
                           "file (members/<j>/model.safetensors in the run folder), or load the whole run with "
                           "medtl.infer.Predictor.from_run")
    if any(k.startswith("net.") for k in keys):
        return "medtl"
    if any(k.startswith("_conv_stem.") for k in keys):
        return "lukemelas"
    return "torchvision"


def _few(keys: set[str] | list[str], n: int = 4) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def to_medtl_names(model: Backbone, state_dict: Mapping[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's keys to ``model``'s (shapes untouched; classifier -> ``head.*``)."""
    out: dict[str, torch.Tensor] = {}
    if fmt == "torchvision":
        for key, value in state_dict.items():
            m = _DENSENET_LEGACY.match(key)
            if m:
                key = m.group(1) + m.group(2)
            m = _DENSENET_LAYER.match(key)
            if m:
                key = f"{m.group(1)}.layers.{m.group(2)}"
            for cls in ("fc.", "classifier."):
                if key.startswith(cls):
                    key = "head." + key[len(cls):]
                    break
            else:
                key = "net." + key
            out[key] = value
    elif fmt == "lukemelas":
        # MONAI nests blocks per stage (_blocks.<stage>.<flat>); lukemelas indexes them flat.
        stage_of: dict[str, str] = {}
        for key in model.state_dict():
            m = _NESTED_BLOCK.match(key)
            if m:
                stage_of[m.group(2)] = m.group(1)
        for key, value in state_dict.items():
            m = _FLAT_BLOCK.match(key)
            if m:
                flat = m.group(1)
                stage = stage_of.get(flat)
                key = f"net._blocks.{stage}.{flat}.{m.group(2)}" if stage is not None else "net." + key
            elif key.startswith("_fc."):
                key = "head." + key[len("_fc."):]
            else:
                key = "net." + key
            out[key] = value
    else:
        raise WeightsError(f"unknown checkpoint format {fmt!r} (expected torchvision or lukemelas)")
    return out


def load_pretrained(
    model: Backbone,
    state_dict: Mapping[str, torch.Tensor],
    fmt: str | None = None,
    inflate_mode: str | None = None,
) -> dict[str, object]:
    """Load a 2D RGB ImageNet checkpoint into ``model`` (any channels, 2D or 3D), strictly.

    The stem kernel is adapted to ``model.in_channels`` (1: exact gray fold with
    ``gray_offset``; N: repeat and scale 3/N), then every 2D kernel is inflated to the
    3D shape with ``inflate_mode`` (default: the model card's mode). The checkpoint's 1000-class classifier is kept only
    when the model has a 1000-class head. Updates ``model.card`` (head, input
    adaptation) and returns ``{format, head, input_adaptation}``.
    """
    fmt = fmt or checkpoint_convention(state_dict)
    if inflate_mode is None:
        inflate_mode = (model.card.get("inflate") or {}).get("mode", "i3d")
    if fmt == "medtl":
        model.card["head"] = load_medtl(model, state_dict)
        return {"format": "medtl", "head": model.card["head"], "input_adaptation": None}
    mapped = to_medtl_names(model, state_dict, fmt)
    target = model.state_dict()
    has_head = all(k in mapped for k in HEAD_KEYS)
    keep_head = has_head and model.head is not None and model.num_classes == mapped["head.weight"].shape[0]
    if not keep_head:
        for k in HEAD_KEYS:
            mapped.pop(k, None)
    expected = {k for k in target if k != "gray_offset" and (keep_head or k not in HEAD_KEYS)}
    missing = {k for k in expected - set(mapped) if not k.endswith("num_batches_tracked")}
    unexpected = set(mapped) - expected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"model keys missing from the file: {_few(missing)}")
        if unexpected:
            parts.append(f"file keys with no place in {model.arch}: {_few(unexpected)}")
        raise WeightsError(f"checkpoint does not match {model.arch} ({fmt} format): " + "; ".join(parts))

    new: dict[str, torch.Tensor] = {}
    offset: torch.Tensor | None = None
    adaptation = "rgb"
    for key, value in mapped.items():
        value = value.detach().to(dtype=target[key].dtype) if value.is_floating_point() else value
        if key == model.stem_conv_key and value.ndim == 4 and value.shape[1] == 3 and model.in_channels != 3:
            if model.in_channels == 1:
                value, offset = fold_gray_normalization(value)
                adaptation = "gray-exact (kernel sum_c w_c*gray_std/std_c + mask offset)"
            else:
                value = adapt_input_conv(value, model.in_channels)
                adaptation = f"repeat RGB kernels, scale 3/{model.in_channels}"
        if target[key].ndim == value.ndim + 1 and value.ndim == 4:
            depth = target[key].shape[2]
            value = inflate_kernel(value, depth, inflate_mode)
            if key == model.stem_conv_key and offset is not None:
                offset = inflate_kernel(offset, depth, inflate_mode)
        if tuple(value.shape) != tuple(target[key].shape):
            raise WeightsError(
                f"checkpoint tensor {key} has shape {tuple(value.shape)} but {model.arch} needs "
                f"{tuple(target[key].shape)} (wrong architecture or file)"
            )
        new[key] = value
    result = model.load_state_dict(new, strict=False)
    left = [k for k in result.missing_keys if k in expected and not k.endswith("num_batches_tracked")]
    if left or result.unexpected_keys:
        raise WeightsError(f"internal: keys not loaded into {model.arch}: {_few(left + result.unexpected_keys)}")
    if model.gray_offset is not None:
        with torch.no_grad():
            model.gray_offset.copy_(offset if offset is not None else torch.zeros_like(model.gray_offset))
    info = {"format": fmt, "head": "imagenet" if keep_head else ("new" if model.head is not None else None),
            "input_adaptation": adaptation}
    model.card.update(head=info["head"], input_adaptation=adaptation)
    return info


def load_medtl(model: Backbone, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Strictly load a saved :class:`Backbone` state dict (same arch, channels, dims).

    A head of another size (a model fine-tuned for other classes, started again on a new task) or a
    model without a head takes everything but the head, as timm does for a pretrained file: returns
    ``"new"`` (a freshly initialised head), ``None`` (no head), or ``"file"`` (the file's head).
    """
    sd = dict(state_dict)
    own = model.state_dict()
    head = "file"
    if all(k in sd for k in HEAD_KEYS) and (model.head is None or any(
            k in own and tuple(own[k].shape) != tuple(sd[k].shape) for k in HEAD_KEYS)):
        for k in HEAD_KEYS:
            sd.pop(k)
        head = "new" if model.head is not None else None
    fit = (f"saved medtl weights do not fit this {model.arch} model (check in_channels, spatial_dims, "
           "the 3D mode)")
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])[:300]
        raise WeightsError(f"{fit}: {detail}") from None
    missing = [k for k in missing if head == "file" or k not in HEAD_KEYS]
    problems = "; ".join(f"{what} keys {_few(keys)}" for what, keys in (("missing", missing),
                                                                         ("unexpected", unexpected)) if keys)
    if problems:
        raise WeightsError(f"{fit}: {problems}")
    return head
