"""Saliency maps for one network input, 2D and 3D: class activation maps at any stage, occlusion,
gradient attributions.

- ``gradcam`` / ``gradcam++`` on ``model.feature_layer`` come from MONAI's
  ``monai.visualize`` (``GradCAM``, ``GradCAMpp``); the hooked layer is the
  model's own ``feature_layer`` (a module), turned into the name MONAI wants by
  identity in ``named_modules()``. Given ``stride=...`` they, and ``hirescam`` and
  ``layercam``, are taken at the backbone stage(s) of that stride instead
  (:mod:`medtl.explain.cam`; several strides are fused).
- ``occlusion``: MONAI's ``OcclusionSensitivity`` with a softmax over the classes
  (MONAI's default activation looks at the *input* channel count and would apply a
  sigmoid to a 1-channel model) and mask size / overlap defaults that keep 3D
  affordable on CPU.
- ``integrated_gradients`` / ``smoothgrad``: captum's ``IntegratedGradients`` and
  ``NoiseTunnel(Saliency)``.

The model is left exactly as found: MONAI registers its hooks without keeping the
handles (they would stay on the model forever), so :class:`_LayerHooks` keeps and
removes them; train/eval flags of every submodule, ``requires_grad`` and existing
``.grad`` of every parameter are restored. Every map is returned as float32 in
``[0, 1]``, min-max normalised per map (MONAI's default normaliser flips the map:
max -> 0).

Which method is the default (:data:`DEFAULT_METHOD`) is measured, not assumed:
``benchmarks/saliency.py`` scores every candidate on the demo recipe's models
(pointing game against lesion masks, mass in the lesion, deletion faithfulness);
``docs/benchmarks.md`` has the table.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.visualize import GradCAM, GradCAMpp, OcclusionSensitivity
from monai.visualize.class_activation_maps import ModelWithHooks
from torch import nn

from medtl.errors import ArgumentError, ArgumentTypeError
from medtl.explain.cam import stage_cam

#: Methods :func:`saliency` knows; the first is the default.
METHODS = ("hirescam", "gradcam", "gradcam++", "layercam", "occlusion", "integrated_gradients", "smoothgrad")
#: Names for people (the app's choices, overlay captions).
METHOD_TITLES = {"layercam": "LayerCAM", "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM",
                 "occlusion": "Occlusion", "integrated_gradients": "Integrated Gradients", "smoothgrad": "SmoothGrad"}
#: The default method: the winner of ``benchmarks/saliency.py`` on the validation positives.
DEFAULT_METHOD = METHODS[0]
#: Stage strides each CAM method uses unless given ``stride=`` (``None``: ``model.feature_layer``).
#: Where a model has no stage at a listed stride, the nearest stride it has is used.
CAM_STRIDES: dict[str, tuple[int, ...] | None] = {
    "hirescam": (4, 8),
    "gradcam": None,
    "gradcam++": None,
    "layercam": (8, 16),
}
#: Integrated Gradients: steps of the path integral (baseline: the all-zero network input, i.e. the mean).
IG_STEPS = 16
#: SmoothGrad: noisy copies and noise std as a fraction of the input's value range.
SMOOTHGRAD_SAMPLES = 16
SMOOTHGRAD_NOISE = 0.15

#: Default occlusion mask as a fraction of the input size per axis, and window overlap.
#: 2D: mask 1/8 of each side, overlap 0.5 (stride 1/16): 15 x 15 = 225 occluded copies.
#: 3D: mask 1/4 of each side, overlap 0.25 (stride 3/16): 5 x 5 x 5 = 125 copies, so a
#: 3D ResNet-18 stays at minutes, not hours, on a CPU.
OCCLUSION_DEFAULTS = {2: {"mask_fraction": 1 / 8, "overlap": 0.5}, 3: {"mask_fraction": 1 / 4, "overlap": 0.25}}


@dataclass(frozen=True)
class Explanation:
    """A saliency map with the prediction it explains.

    ``map``: float32 ``[0, 1]`` with the input's spatial shape (network layout);
    ``probabilities``: softmax of the model's logits for the un-occluded input;
    ``target``: the class explained.
    """

    map: np.ndarray
    probabilities: np.ndarray
    target: int
    method: str


def _cut_graph(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: the feature map becomes a leaf that requires grad.

    Grad-CAM needs gradients at the feature map only; with the graph cut there
    (and parameters frozen) nothing before it is recorded or back-propagated,
    so a map costs about one forward pass instead of a forward and a full backward.
    """
    if not isinstance(output, torch.Tensor):
        raise ArgumentTypeError(f"feature_layer must return one tensor (the feature map), got {type(output).__name__}")
    return output.detach().requires_grad_(True)


class _LayerHooks(ModelWithHooks):
    """MONAI's ``ModelWithHooks`` for one module, keeping the hook handles so they can be removed.

    MONAI's own constructor registers the hooks and drops the handles; this one
    registers the same two hooks (MONAI's ``forward_hook``/``backward_hook``)
    and keeps them, and records the logits of the last call.
    """

    def __init__(self, model: nn.Module, layer: nn.Module, layer_name: str) -> None:
        self.model = model
        self.target_layers = (layer_name,)
        self.gradients: dict[str, torch.Tensor] = {}
        self.activations: dict[str, torch.Tensor] = {}
        self.score: torch.Tensor | None = None
        self.class_idx: int | None = None
        self.register_forward = True
        self.register_backward = True
        self.logits: torch.Tensor | None = None
        # A full backward hook cannot sit on a module that works in place (what MONAI also switches off).
        self._inplace = layer.__dict__.get("inplace")
        if self._inplace:
            layer.__dict__["inplace"] = False
        self._layer = layer
        self._handles = [
            layer.register_forward_hook(_cut_graph),
            layer.register_forward_hook(self.forward_hook(layer_name)),
            layer.register_full_backward_hook(self.backward_hook(layer_name)),
        ]

    def __call__(self, x: torch.Tensor, class_idx: int | None = None, retain_graph: bool = False, **kwargs):
        logits, acti, grad = super().__call__(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        self.logits = logits.detach()
        return logits, acti, grad

    def remove(self) -> None:
        """Remove the hooks and drop what the call recorded: MONAI's ``score`` keeps its autograd graph, which
        holds the backward hook, which holds this object (a cycle through C++ the garbage collector cannot
        free: every map's graph would stay in memory)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.score = None
        self.activations.clear()
        self.gradients.clear()
        if self._inplace:
            self._layer.__dict__["inplace"] = self._inplace


def feature_layer_name(model: nn.Module) -> str:
    """Name (in ``named_modules()``) of ``model.feature_layer``, found by identity."""
    layer = getattr(model, "feature_layer", None)
    if not isinstance(layer, nn.Module):
        raise ArgumentTypeError(f"{type(model).__name__} has no `feature_layer` module; Grad-CAM needs the module "
                                "whose output is the last feature map (medtl backbones have it; give your model one)")
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ArgumentError(f"{type(model).__name__}.feature_layer is not a submodule of the model")


@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters inside; every flag and existing gradient restored after.

    Grad-CAM gets its gradient from a feature map cut out of the graph
    (:func:`_cut_graph`), so no parameter gradient is computed (cheaper, and
    nothing is left on the model); MONAI's ``zero_grad()`` would wipe a
    caller's gradients, so they are put back.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _, _ in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag, grad in params:
            p.requires_grad_(flag)
            p.grad = grad
        for m, flag in modes:
            m.training = flag


def normalize_map(m: np.ndarray) -> np.ndarray:
    """Min-max scale to float32 ``[0, 1]`` per map; a constant (or empty) map becomes zeros, NaN/inf become 0.

    Values are relative within one map: 1 is the most salient voxel of *this*
    input, so maps of different inputs or methods are not comparable in level.
    """
    m = np.asarray(m, dtype=np.float64)
    finite = np.isfinite(m)
    out = np.zeros(m.shape, dtype=np.float32)
    if not finite.any():
        return out
    lo, hi = float(m[finite].min()), float(m[finite].max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return out
    out[finite] = (m[finite] - lo) / (hi - lo)
    return out


def _batch(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(f"x must be a torch.Tensor (C, ...) network input, got {type(x).__name__}")
    dims = getattr(model, "spatial_dims", None)
    if x.ndim not in (3, 4) or (dims is not None and x.ndim != dims + 1):
        want = f"(C, {'D, H, W' if dims == 3 else 'H, W'})" if dims else "(C, H, W) or (C, D, H, W)"
        raise ArgumentError(f"x must be one network input {want} without a batch axis, got shape {tuple(x.shape)}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return x.detach().to(device=device, dtype=dtype)[None]


def _check_target(target: int | None, n_classes: int | None) -> None:
    if target is None:
        return
    try:
        whole = int(target) == target
    except (TypeError, ValueError):  # target="x": not a number at all
        whole = False
    if isinstance(target, bool) or not whole or target < 0 or (n_classes is not None and target >= n_classes):
        top = f"0..{n_classes - 1}" if n_classes is not None else "a class index >= 0"
        raise ArgumentError(f"target={target!r} is not a class of this model ({top})")


def _check_classifier(model: nn.Module) -> None:
    if hasattr(model, "head") and getattr(model, "head") is None:
        raise ArgumentError("the model has no classification head (built with num_classes=None); "
                            "saliency explains a class score")


def _logits_ok(logits: torch.Tensor | None) -> None:
    if logits is None:
        raise RuntimeError("the model was not run (no logits recorded)")
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ArgumentError(f"saliency needs class logits of shape (1, n_classes >= 2), got {tuple(logits.shape)}")


def _cam(model: nn.Module, xb: torch.Tensor, method: str, target: int | None) -> Explanation:
    _check_target(target, getattr(model, "num_classes", None))
    name = feature_layer_name(model)
    hooks = _LayerHooks(model, model.get_submodule(name), name)
    try:
        cls = GradCAM if method == "gradcam" else GradCAMpp
        cam = cls(nn_module=hooks, target_layers=name, postprocessing=lambda m: m)
        with torch.enable_grad(), warnings.catch_warnings():
            # Expected with the cut graph: only the outputs' gradient exists, and that is what MONAI records.
            warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
            try:
                raw = cam(x=xb, class_idx=None if target is None else int(target))
            except IndexError:
                if target is None:
                    raise
                raise ArgumentError(f"target={target} is not a class of this model (too few logits)") from None
        logits = hooks.logits
    finally:
        hooks.remove()
    _logits_ok(logits)
    chosen = int(logits.argmax(1)) if target is None else int(target)
    probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    return Explanation(normalize_map(raw[0, 0].detach().cpu().numpy()), probs, chosen, method)


def occlusion_settings(spatial_shape: Sequence[int], mask_size: int | Sequence[int] | None = None,
                       overlap: float | None = None) -> tuple[list[int], float]:
    """Mask size per axis and overlap used for an input of ``spatial_shape`` (defaults: :data:`OCCLUSION_DEFAULTS`)."""
    dims = len(spatial_shape)
    if dims not in OCCLUSION_DEFAULTS:
        raise ArgumentError(f"occlusion needs 2 or 3 spatial axes, got shape {tuple(spatial_shape)}")
    d = OCCLUSION_DEFAULTS[dims]
    if mask_size is None:
        mask = [max(1, math.ceil(s * d["mask_fraction"])) for s in spatial_shape]
    else:
        mask = [int(m) for m in (mask_size if isinstance(mask_size, Sequence) else [mask_size] * dims)]
        if len(mask) != dims or any(m < 1 for m in mask):
            raise ArgumentError(f"mask_size={mask_size} must be a positive size per spatial axis ({dims})")
    mask = [min(m, s) for m, s in zip(mask, spatial_shape)]
    ov = d["overlap"] if overlap is None else float(overlap)
    if not 0.0 <= ov < 1.0:
        raise ArgumentError(f"overlap={overlap} must be in [0, 1)")
    return mask, ov


def _occlusion(model: nn.Module, xb: torch.Tensor, target: int | None, mask_size: int | Sequence[int] | None,
               overlap: float | None, n_batch: int, progress: bool = False) -> Explanation:
    mask, ov = occlusion_settings(xb.shape[2:], mask_size, overlap)
    with torch.no_grad():
        logits = model(xb)
    _logits_ok(logits)
    _check_target(target, logits.shape[1])
    chosen = int(logits.argmax(1)) if target is None else int(target)
    probs = torch.softmax(logits.float(), dim=1)
    # "gaussian": each window multiplies its patch by (1 - Gaussian), i.e. fades it to 0 -- the mean
    # intensity of a normalised input -- with soft edges, and windows are blended with Gaussian weights.
    occ = OcclusionSensitivity(model, mask_size=mask, n_batch=n_batch, verbose=progress, mode="gaussian",
                               overlap=ov, activate=lambda out: torch.softmax(out.float(), dim=1))
    with warnings.catch_warnings():
        # MONAI 1.6 indexes with lists of slices, which torch deprecates (same result on this torch;
        # the pointing-game tests would catch a change).
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
        occ_map, _ = occ(xb)
    # Importance = how much the target's probability drops when a region is hidden.
    drop = probs[0, chosen] - occ_map[0, chosen]
    return Explanation(normalize_map(drop.detach().cpu().numpy()), probs[0].cpu().numpy(), chosen, "occlusion")


def _stage_cam(model: nn.Module, xb: torch.Tensor, method: str, target: int | None,
               stride: int | Sequence[int] | None) -> Explanation:
    _check_target(target, getattr(model, "num_classes", None))
    exact = stride is not None
    strides = ([int(stride)] if isinstance(stride, int) else [int(s) for s in stride]) if exact \
        else CAM_STRIDES[method]
    cam, logits, chosen, _ = stage_cam(model, xb, method, target, strides, exact=exact)
    probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    return Explanation(normalize_map(cam), probs, chosen, method)


def _attribution(model: nn.Module, xb: torch.Tensor, method: str, target: int | None) -> Explanation:
    """captum's Integrated Gradients (positive part) or SmoothGrad (|gradient|), summed over channels."""
    from captum.attr import IntegratedGradients, NoiseTunnel
    from captum.attr import Saliency as Gradient

    with torch.no_grad():
        logits = model(xb)
    _logits_ok(logits)
    _check_target(target, logits.shape[1])
    chosen = int(logits.argmax(1)) if target is None else int(target)
    with torch.enable_grad():
        if method == "integrated_gradients":
            attr = IntegratedGradients(model).attribute(xb, baselines=torch.zeros_like(xb), target=chosen,
                                                        n_steps=IG_STEPS, internal_batch_size=IG_STEPS)
            attr = attr.clamp(min=0)
        else:
            spread = float(xb.max() - xb.min()) or 1.0
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the same map for the same input
                attr = NoiseTunnel(Gradient(model)).attribute(
                    xb, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES,
                    nt_samples_batch_size=SMOOTHGRAD_SAMPLES, stdevs=SMOOTHGRAD_NOISE * spread, target=chosen)
    m = attr[0].detach().sum(0).cpu().numpy()
    probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    return Explanation(normalize_map(m), probs, chosen, method)


def explain(model: nn.Module, x: torch.Tensor, method: str = DEFAULT_METHOD, target: int | None = None, *,
            mask_size: int | Sequence[int] | None = None, overlap: float | None = None,
            n_batch: int = 16, stride: int | Sequence[int] | None = None, progress: bool = False) -> Explanation:
    """Saliency map of one network input plus the prediction it explains (see :func:`saliency`);
    ``progress``: occlusion's windows as a progress bar with its time left (MONAI's), on stderr."""
    if method not in METHODS:
        raise ArgumentError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    if method != "occlusion" and (mask_size is not None or overlap is not None):
        raise ArgumentError("mask_size and overlap are occlusion settings; they do not apply to " + method)
    if stride is not None and method not in CAM_STRIDES:
        raise ArgumentError(f"stride is a setting of the activation maps ({', '.join(CAM_STRIDES)}), not of {method}")
    from medtl.models.ensemble import Ensemble

    if isinstance(model, Ensemble):
        return _ensemble_explain(model, x, method, target, mask_size=mask_size, overlap=overlap, n_batch=n_batch,
                                 stride=stride, progress=progress)
    _check_classifier(model)
    xb = _batch(model, x)
    with _untouched(model):
        if method == "occlusion":
            return _occlusion(model, xb, target, mask_size, overlap, n_batch, progress)
        if method in ("integrated_gradients", "smoothgrad"):
            return _attribution(model, xb, method, target)
        if method in ("gradcam", "gradcam++") and stride is None and CAM_STRIDES[method] is None:
            return _cam(model, xb, method, target)
        return _stage_cam(model, xb, method, target, stride)


def _ensemble_explain(model: nn.Module, x: torch.Tensor, method: str, target: int | None, **settings) -> Explanation:
    """An ensemble's map: the mean of its members' maps for the class the ensemble predicts (or ``target``),
    renormalised; the probabilities are the ensemble's own. Each member is explained as a single network,
    so every method (and the activation maps' stages) works unchanged."""
    _check_target(target, model.num_classes)
    xb = _batch(model, x)
    with _untouched(model), torch.no_grad():
        probs = torch.softmax(model(xb).float(), dim=1)[0].cpu().numpy()
    chosen = int(probs.argmax()) if target is None else int(target)
    maps = [explain(m, x, method, chosen, **settings).map for m in model.members]
    return Explanation(normalize_map(np.mean(maps, axis=0)), probs, chosen, method)


def saliency(model: nn.Module, x: torch.Tensor, method: str = DEFAULT_METHOD, target: int | None = None, *,
             mask_size: int | Sequence[int] | None = None, overlap: float | None = None,
             n_batch: int = 16, stride: int | Sequence[int] | None = None) -> np.ndarray:
    """Saliency map of one network input ``x`` ``(C, H, W)`` or ``(C, D, H, W)`` for class ``target``.

    Returns float32 ``x.shape[1:]`` (network layout) in ``[0, 1]``, min-max
    normalised per map (:func:`normalize_map`); ``target`` defaults to the
    predicted class. Methods (:data:`METHODS`, default :data:`DEFAULT_METHOD`):

    - ``"layercam"``, ``"hirescam"``, ``"gradcam"``, ``"gradcam++"``: class
      activation maps at the backbone stages of :data:`CAM_STRIDES` (or
      ``stride``: one stride or several, fused by the mean of their maps);
      ``gradcam``/``gradcam++`` without a stride use ``model.feature_layer``,
      as coarse as that grid (1/32 of the input for the medtl backbones);
    - ``"occlusion"``: drop of the target's softmax probability when a window is
      faded out; ``mask_size`` (per axis) and ``overlap`` default to
      :data:`OCCLUSION_DEFAULTS`; ``n_batch`` occluded copies per forward pass;
    - ``"integrated_gradients"`` (positive part, :data:`IG_STEPS` steps from the
      zero input) and ``"smoothgrad"`` (mean |gradient| over
      :data:`SMOOTHGRAD_SAMPLES` noisy copies), from captum.

    The model is run in eval mode and left as it was (modes, ``requires_grad``,
    gradients, no hooks).
    """
    return explain(model, x, method, target, mask_size=mask_size, overlap=overlap, n_batch=n_batch,
                   stride=stride).map
