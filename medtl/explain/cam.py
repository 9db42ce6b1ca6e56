"""Class activation maps at any stage of a backbone: Grad-CAM, HiResCAM, LayerCAM, Grad-CAM++, and fusions.

At the recipe's input sizes the last stage of a medtl backbone is too coarse to
point (Lite0 at 64 px: stride 32, a 2 x 2 map). These maps are taken at the
output of a *stage* chosen by its stride (the input size over the stage's
output size, measured on the input itself), so ``stride=8`` on a 64 px input
is an 8 x 8 map. Stages are ``model.stages`` (the backbone's own list, stem to
head); a model without ``stages`` offers its ``feature_layer`` only.

One forward and one backward pass give every stage: the network input is made
to require grad (parameters stay frozen) and ``torch.autograd.grad`` takes the
target's gradient at the chosen stage outputs. Per stage (``A``: activations,
``g``: their gradient, sums over channels ``c``):

- ``gradcam``   ReLU(sum_c mean(g_c) A_c)             (Selvaraju et al. 2017)
- ``hirescam``  ReLU(sum_c g_c * A_c)                 (Draelos & Carin 2020)
- ``layercam``  ReLU(sum_c ReLU(g_c) * A_c)           (Jiang et al. 2021)
- ``gradcam++`` ReLU(sum_c w_c A_c) with MONAI's second-order weights w_c
  (Chattopadhay et al. 2018; the formula of ``monai.visualize.GradCAMpp``)

Each stage's map is upsampled (bi/trilinear, ``align_corners=False``, as MONAI)
to the input size and min-max scaled; several strides are fused by their mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medtl.errors import ArgumentError, ArgumentTypeError

#: CAM kinds :func:`stage_cam` computes.
CAM_KINDS = ("gradcam", "hirescam", "layercam", "gradcam++")


@dataclass(frozen=True)
class StageLayer:
    """A module whose output is a stage's feature map, with the stage's name and stride for one input size."""

    name: str
    module: nn.Module
    stride: int
    shape: tuple[int, ...]


def stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(stage name, module whose output is the stage's output)`` from stem to last stage (no head).

    ``model.stages`` entries that are plain ``nn.ModuleList`` groups (never called
    themselves) are represented by their last member, which the backbone calls last.
    A model without ``stages`` gives its ``feature_layer`` alone.
    """
    stages = getattr(model, "stages", None)
    out: list[tuple[str, nn.Module]] = []
    if stages:
        for name, module in stages:
            if name == "head":
                continue
            while isinstance(module, nn.ModuleList) and len(module):
                module = module[-1]
            out.append((name, module))
    feature = getattr(model, "feature_layer", None)
    if isinstance(feature, nn.Module) and all(m is not feature for _, m in out):
        out.append(("feature_layer", feature))
    if not out:
        raise ArgumentTypeError(f"{type(model).__name__} has neither `stages` nor a `feature_layer` module; "
                                "stage CAMs need one of them")
    return out


def _stride(in_shape: Sequence[int], out_shape: Sequence[int]) -> int:
    """The coarsest per-axis ratio input size / map size, rounded (e.g. 64 -> 8 gives 8)."""
    return int(round(max(i / max(o, 1) for i, o in zip(in_shape, out_shape))))


def _run(model: nn.Module, xb: torch.Tensor) -> tuple[torch.Tensor, list[StageLayer], list[torch.Tensor]]:
    """Forward pass keeping every stage's output in the graph: ``(logits, stages, outputs)``."""
    found: dict[int, torch.Tensor] = {}
    modules = stage_modules(model)

    def keep(index: int):
        def hook(_m: nn.Module, _i: tuple, output: torch.Tensor) -> None:
            if isinstance(output, torch.Tensor):
                found[index] = output  # the last call wins (a module used twice)
        return hook

    handles = [m.register_forward_hook(keep(i)) for i, (_, m) in enumerate(modules)]
    try:
        logits = model(xb)
    finally:
        for h in handles:
            h.remove()
    spatial = tuple(xb.shape[2:])
    layers, outputs = [], []
    for i, (name, module) in enumerate(modules):
        out = found.get(i)
        if out is None or out.ndim != xb.ndim or not out.requires_grad:
            continue
        layers.append(StageLayer(name, module, _stride(spatial, out.shape[2:]), tuple(out.shape[2:])))
        outputs.append(out)
    return logits, layers, outputs


def stage_layers(model: nn.Module, x: torch.Tensor) -> list[StageLayer]:
    """The stages of ``model`` with their stride and map shape for network input ``x`` ``(C, ...)``."""
    xb = x.detach()[None].float().requires_grad_(True)
    with torch.enable_grad():
        _, layers, _ = _run(model, xb)
    return layers


def pick_stages(layers: Sequence[StageLayer], strides: Sequence[int] | None, exact: bool = True) -> list[int]:
    """Indices of the *last* stage at each wanted stride (``None``: the last stage).

    ``exact=False``: a stride the model lacks is replaced by the nearest one it has
    (ties: the finer), duplicates dropped -- so a default such as ``(8, 16)`` still
    works on a small network whose only stage has stride 2.
    """
    if not layers:
        raise ArgumentError("the model exposed no stage output for this input")
    if strides is None:
        return [len(layers) - 1]
    have = sorted({layer.stride for layer in layers})
    chosen: list[int] = []
    for s in strides:
        s = int(s)
        if s not in have:
            if exact:
                raise ArgumentError(f"no stage of stride {s} for this input (stage strides: {have})")
            s = min(have, key=lambda h: (abs(np.log2(h / s)), h))
        last = max(i for i, layer in enumerate(layers) if layer.stride == s)
        if last not in chosen:
            chosen.append(last)
    return chosen


def _combine(kind: str, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """One stage's CAM ``(1, 1, *S)`` (before upsampling) from activations and their gradient."""
    dims = tuple(range(2, act.ndim))
    if kind == "gradcam":
        cam = (grad.mean(dim=dims, keepdim=True) * act).sum(1, keepdim=True)
    elif kind == "hirescam":
        cam = (grad * act).sum(1, keepdim=True)
    elif kind == "layercam":
        cam = (F.relu(grad) * act).sum(1, keepdim=True)
    elif kind == "gradcam++":
        g2, g3 = grad.pow(2), grad.pow(3)
        denom = 2 * g2 + (act.sum(dim=dims, keepdim=True) * g3)
        alpha = g2 / torch.where(denom != 0.0, denom, torch.ones_like(denom))
        weights = (alpha * F.relu(grad)).sum(dim=dims, keepdim=True)
        cam = (weights * act).sum(1, keepdim=True)
    else:
        raise ArgumentError(f"unknown CAM kind {kind!r}; choose one of {', '.join(CAM_KINDS)}")
    return F.relu(cam)


def _minmax(t: torch.Tensor) -> torch.Tensor:
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if float(hi - lo) > 1e-12 * max(1.0, abs(float(hi))) else torch.zeros_like(t)


def stage_cam(model: nn.Module, xb: torch.Tensor, kind: str, target: int | None,
              strides: Sequence[int] | None,
              exact: bool = True) -> tuple[np.ndarray, torch.Tensor, int, list[StageLayer]]:
    """CAM of a batch of one ``xb`` ``(1, C, ...)`` at the stages of ``strides`` (fused by the mean).

    ``exact``: see :func:`pick_stages`. Returns ``(map, logits, target, layers used)``; the map is float32 ``[0, 1]``
    with the input's spatial shape. The model must be in eval mode with frozen
    parameters (:func:`medtl.explain.saliency.explain` sees to it).
    """
    if kind not in CAM_KINDS:
        raise ArgumentError(f"unknown CAM kind {kind!r}; choose one of {', '.join(CAM_KINDS)}")
    xb = xb.detach().requires_grad_(True)
    with torch.enable_grad():
        logits, layers, outputs = _run(model, xb)
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise ArgumentError(f"saliency needs class logits of shape (1, n_classes >= 2), got {tuple(logits.shape)}")
        chosen = int(logits.argmax(1)) if target is None else int(target)
        if not 0 <= chosen < logits.shape[1]:
            raise ArgumentError(f"target={target} is not a class of this model (0..{logits.shape[1] - 1})")
        picked = pick_stages(layers, strides, exact)
        grads = torch.autograd.grad(logits[0, chosen], [outputs[i] for i in picked])
    mode = "bilinear" if xb.ndim == 4 else "trilinear"
    size = tuple(xb.shape[2:])
    maps = []
    for i, grad in zip(picked, grads):
        cam = _combine(kind, outputs[i].detach(), grad.detach())
        maps.append(_minmax(F.interpolate(cam, size=size, mode=mode, align_corners=False)[0, 0]))
    fused = torch.stack(maps).mean(0)
    return fused.cpu().numpy().astype(np.float32), logits.detach(), chosen, [layers[i] for i in picked]
