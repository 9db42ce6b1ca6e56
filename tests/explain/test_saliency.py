"""medtl.explain.saliency on real medtl backbones: exact Grad-CAM, model left untouched, settings, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medtl.explain import (
    OCCLUSION_DEFAULTS,
    explain,
    feature_layer_name,
    normalize_map,
    occlusion_settings,
    saliency,
)
from medtl.models import create

from .conftest import TinyCNN


def _manual_gradcam(model: nn.Module, x: torch.Tensor, targets: range) -> list[np.ndarray]:
    """Grad-CAM written out (Selvaraju et al.): ReLU(sum_c mean(dy/dA_c) A_c), upsampled, min-max scaled."""
    feats = model.forward_features(x[None]).detach().requires_grad_(True)
    logits = model.head(feats.mean(dim=tuple(range(2, feats.ndim))))
    mode = "bilinear" if x.ndim == 3 else "trilinear"
    out = []
    for target in targets:
        (grad,) = torch.autograd.grad(logits[0, target], feats, retain_graph=True)
        weights = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
        cam = F.relu((weights * feats).sum(1, keepdim=True))
        up = F.interpolate(cam, size=tuple(x.shape[1:]), mode=mode, align_corners=False)
        out.append(normalize_map(up[0, 0].detach().numpy()))
    return out


@pytest.mark.parametrize("spatial_dims, shape", [(2, (1, 64, 96)), (3, (1, 32, 64, 96))])
def test_gradcam_on_resnet18_is_the_gradcam_formula(spatial_dims, shape, one_thread):
    torch.manual_seed(3)
    model = create("resnet18", weights=None, in_channels=1, spatial_dims=spatial_dims, num_classes=3).eval()
    x = torch.randn(shape)
    wanted = _manual_gradcam(model, x, range(3))
    for target, want in enumerate(wanted):
        got = saliency(model, x, "gradcam", target=target)
        assert got.shape == shape[1:] and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5)
    # at least one non-degenerate map (ReLU may zero a class's map), so the comparison bites
    assert max(w.max() for w in wanted) == 1.0


@pytest.mark.parametrize("arch, name", [("resnet18", "net.layer4"), ("densenet121", "final_act"),
                                        ("efficientnet_lite0", "final_act")])
def test_layer_comes_from_feature_layer(arch, name, one_thread):
    model = create(arch, weights=None, in_channels=1, num_classes=2)
    assert feature_layer_name(model) == name
    for method in ("gradcam", "gradcam++"):
        m = saliency(model, torch.rand(1, 64, 64), method)
        assert m.shape == (64, 64) and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "occlusion"])
def test_model_is_left_as_found(method, one_thread):
    torch.manual_seed(0)
    model = create("resnet18", weights=None, in_channels=1, num_classes=2)
    model.train()
    model.net.bn1.eval()  # e.g. a frozen BatchNorm during fine-tuning
    for p in model.net.conv1.parameters():
        p.requires_grad_(False)
    model.head.weight.grad = torch.ones_like(model.head.weight)
    kept_grad = model.head.weight.grad
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks(model)

    opts = {"mask_size": 16, "overlap": 0.0} if method == "occlusion" else {}
    saliency(model, torch.rand(1, 64, 64), method, **opts)

    assert _hooks(model) == hooks
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.head.weight.grad is kept_grad
    assert all(p.grad is None for n, p in model.named_parameters() if n != "head.weight")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # eval mode inside: BatchNorm running stats untouched


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_no_graph_kept_after_the_call(method, one_thread):
    """MONAI's hook object keeps the class score, whose autograd graph holds the backward hook that holds the
    object: a cycle through C++ that the garbage collector cannot see, so every map kept its graph alive (a
    server's memory grew by each call's activations). After the call nothing of it may stay."""
    import gc

    from medtl.explain.saliency import _LayerHooks

    model = create("resnet18", weights=None, in_channels=1, num_classes=2)
    for _ in range(3):
        saliency(model, torch.rand(1, 32, 32), method)
    gc.collect()
    assert sum(isinstance(o, _LayerHooks) for o in gc.get_objects()) == 0


def test_default_target_is_the_prediction(one_thread):
    torch.manual_seed(1)
    model = create("resnet18", weights=None, in_channels=1, num_classes=4).eval()
    x = torch.randn(1, 64, 64)
    with torch.no_grad():
        logits = model(x[None])
    for method, opts in (("gradcam", {}), ("occlusion", {"mask_size": 16, "overlap": 0.0})):
        res = explain(model, x, method, **opts)
        assert res.target == int(logits.argmax())
        np.testing.assert_allclose(res.probabilities, torch.softmax(logits, 1)[0].numpy(), atol=1e-6)
        np.testing.assert_array_equal(res.map, saliency(model, x, method, target=res.target, **opts))


def test_3d_backbones_all_methods(one_thread):
    torch.manual_seed(2)
    model = create("resnet18", weights=None, in_channels=1, spatial_dims=3, num_classes=2)
    x = torch.randn(1, 16, 16, 16)
    for method in ("gradcam", "gradcam++"):
        m = saliency(model, x, method)
        assert m.shape == (16, 16, 16) and m.dtype == np.float32
    m = saliency(model, x, "occlusion", mask_size=8, overlap=0.0)
    assert m.shape == (16, 16, 16) and m.max() == 1.0 and m.min() == 0.0


class _Counting(nn.Module):
    """Counts the images the wrapped model sees (to check how many occluded copies are run)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen = 0

    @property
    def feature_layer(self) -> nn.Module:
        return self.inner.feature_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.inner(x)


@pytest.mark.parametrize("spatial_dims, size, copies", [(2, 32, 15 * 15), (3, 16, 5 * 5 * 5)])
def test_occlusion_defaults(spatial_dims, size, copies, one_thread):
    d = OCCLUSION_DEFAULTS[spatial_dims]
    mask, overlap = occlusion_settings((size,) * spatial_dims)
    assert mask == [int(np.ceil(size * d["mask_fraction"]))] * spatial_dims and overlap == d["overlap"]
    assert occlusion_settings((224, 224)) == ([28, 28], 0.5)
    assert occlusion_settings((128, 128, 128)) == ([32, 32, 32], 0.25)
    model = _Counting(TinyCNN(spatial_dims, width=4))
    saliency(model, torch.randn((1,) + (size,) * spatial_dims), "occlusion")
    # One un-occluded pass plus the sliding windows: 15 per side in 2D, 5 per side in 3D.
    assert model.seen == 1 + copies


def test_occlusion_importance_is_probability_drop(one_thread):
    """A model that only reads one pixel: occluding anything else changes nothing."""

    class OnePixel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x[:, 0, 20, 10]
            return torch.stack([-v, v], dim=1)

    x = torch.full((1, 32, 32), 0.1)
    x[0, 20, 10] = 3.0
    m = saliency(OnePixel(), x, "occlusion", target=1, mask_size=4, overlap=0.5)
    peak = np.unravel_index(np.argmax(m), m.shape)
    assert abs(peak[0] - 20) <= 2 and abs(peak[1] - 10) <= 2
    assert m[:8].max() < 1e-5 and m[:, 24:].max() < 1e-5  # windows there never cover the pixel


def test_normalize_map():
    np.testing.assert_array_equal(normalize_map(np.array([[2.0, 4.0], [6.0, 10.0]])),
                                  np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32))
    assert normalize_map(np.full((3, 3), 7.0)).max() == 0.0
    assert normalize_map(np.array([np.nan, 1.0, 3.0, np.inf])).tolist() == [0.0, 0.0, 1.0, 0.0]


def test_errors(one_thread):
    model = create("resnet18", weights=None, in_channels=1, num_classes=2)
    x = torch.rand(1, 64, 64)
    with pytest.raises(ValueError, match="unknown saliency method"):
        saliency(model, x, "lime")
    hooks = _hooks(model)
    with pytest.raises(ValueError, match="target=2"):
        saliency(model, x, target=2)
    unnamed = TinyCNN(2, width=4)
    del unnamed.num_classes  # class count only known from the logits
    with pytest.raises(ValueError, match="target=5"):
        saliency(unnamed, x, target=5)
    assert _hooks(model) == hooks and _hooks(unnamed) == 0  # no hook left behind by a failed call
    with pytest.raises(ValueError, match="target=-1"):
        saliency(model, x, "occlusion", target=-1)
    with pytest.raises(ValueError, match="target=True"):  # a flag is not a class index (True read as class 1)
        saliency(model, x, target=True)
    with pytest.raises(ValueError, match="without a batch axis"):
        saliency(model, x[None])
    with pytest.raises(ValueError, match="occlusion settings"):
        saliency(model, x, "gradcam", mask_size=8)
    with pytest.raises(ValueError, match="overlap"):
        saliency(model, x, "occlusion", overlap=1.0)
    features_only = create("resnet18", weights=None, in_channels=1, num_classes=None)
    with pytest.raises(ValueError, match="no classification head"):
        saliency(features_only, x)
    with pytest.raises(TypeError, match="feature_layer"):
        saliency(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), x)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "occlusion"])
def test_ensemble_map_is_the_mean_of_its_members_maps_for_the_class_it_predicts(method):
    from medtl.models.ensemble import Ensemble

    torch.manual_seed(0)
    members = [create("resnet18", weights=None, in_channels=1, num_classes=3).eval() for _ in range(2)]
    ens = Ensemble(members).eval()
    x = torch.rand(1, 32, 32)
    with torch.no_grad():
        probs = torch.stack([m(x[None]).softmax(1)[0] for m in members]).mean(0).numpy()
    got = explain(ens, x, method)
    assert got.target == int(probs.argmax())
    np.testing.assert_allclose(got.probabilities, probs, rtol=1e-5)
    expected = normalize_map(np.mean([explain(m, x, method, got.target).map for m in members], axis=0))
    np.testing.assert_array_equal(got.map, expected)
    assert explain(ens, x, method, target=2).target == 2
    with pytest.raises(ValueError, match="target=3"):
        explain(ens, x, method, target=3)
