"""medtl.explain.cam: stage maps on real backbones -- strides, the default layer's resolution, exact formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medtl.config import load_config
from medtl.explain import CAM_STRIDES, DEFAULT_METHOD, explain, normalize_map, saliency, stage_layers
from medtl.explain.cam import pick_stages
from medtl.models import create


def _lite0(spatial_dims: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return create("efficientnet_lite0", weights=None, in_channels=1, num_classes=2, spatial_dims=spatial_dims).eval()


def test_lite0_stage_strides_at_the_demo_size(one_thread):
    size = load_config("demo").preprocess.size
    layers = stage_layers(_lite0(), torch.rand(1, *size))
    assert [(s.name, s.stride, s.shape) for s in layers] == [
        ("stem", 2, (32, 32)), ("blocks1", 2, (32, 32)), ("blocks2", 4, (16, 16)), ("blocks3", 8, (8, 8)),
        ("blocks4", 16, (4, 4)), ("blocks5", 16, (4, 4)), ("blocks6", 32, (2, 2)), ("blocks7", 32, (2, 2)),
        ("conv_head", 32, (2, 2))]


def test_default_method_maps_at_a_usable_resolution(one_thread):
    """At the demo recipe's 64 px the default's stages give 16 x 16 and 8 x 8 maps, not the last stage's 2 x 2."""
    size = load_config("demo").preprocess.size
    layers = stage_layers(_lite0(), torch.rand(1, *size))
    strides = CAM_STRIDES[DEFAULT_METHOD]
    assert strides is not None
    used = [layers[i] for i in pick_stages(layers, strides)]
    assert sorted(layer.shape for layer in used) == [(8, 8), (16, 16)]
    assert [layer.name for layer in used] == ["blocks2", "blocks3"]


def test_gradcam_at_the_last_stage_equals_monai_gradcam(one_thread):
    model, x = _lite0(), torch.randn(1, 64, 64)
    for target in (0, 1):
        np.testing.assert_allclose(saliency(model, x, "gradcam", target, stride=32),
                                   saliency(model, x, "gradcam", target), atol=1e-5)


def test_stage_maps_are_the_formulas(one_thread):
    """Grad-CAM, HiResCAM and LayerCAM at stride 8 of Lite0, written out from the stage's activations."""
    model, x = _lite0(), torch.randn(1, 64, 64)
    acts = {}
    handle = model.net._blocks[2].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    xb = x[None].requires_grad_(True)
    logits = model(xb)
    handle.remove()
    a = acts["a"]
    (g,) = torch.autograd.grad(logits[0, 1], a)
    a, g = a.detach(), g.detach()
    want = {
        "gradcam": (g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True),
        "hirescam": (g * a).sum(1, keepdim=True),
        "layercam": (F.relu(g) * a).sum(1, keepdim=True),
    }
    for method, cam in want.items():
        up = F.interpolate(F.relu(cam), size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        np.testing.assert_allclose(saliency(model, x, method, 1, stride=8), normalize_map(up.numpy()), atol=1e-5)


def test_fused_strides_are_the_mean_of_single_stride_maps(one_thread):
    model, x = _lite0(), torch.randn(1, 64, 64)
    one, two = (saliency(model, x, "layercam", 1, stride=s) for s in (8, 16))
    np.testing.assert_allclose(saliency(model, x, "layercam", 1, stride=[8, 16]), normalize_map((one + two) / 2),
                               atol=1e-5)


def test_3d_stage_maps(one_thread):
    model = _lite0(3)
    m = explain(model, torch.rand(1, 32, 64, 64), DEFAULT_METHOD)
    assert m.map.shape == (32, 64, 64) and m.map.dtype == np.float32 and m.method == DEFAULT_METHOD


def test_pick_stages_exact_and_nearest():
    from medtl.explain import StageLayer

    layers = [StageLayer(f"s{i}", torch.nn.Identity(), s, (1,)) for i, s in enumerate((2, 4, 4, 8))]
    assert pick_stages(layers, None) == [3]
    assert pick_stages(layers, [4, 8]) == [2, 3]
    with pytest.raises(ValueError, match="no stage of stride 16"):
        pick_stages(layers, [16])
    assert pick_stages(layers, [16, 8], exact=False) == [3]  # 16 -> nearest 8, once
    assert pick_stages(layers[:1], [8, 16], exact=False) == [0]


def test_stride_is_only_for_activation_maps(one_thread):
    with pytest.raises(ValueError, match="stride"):
        saliency(_lite0(), torch.rand(1, 64, 64), "occlusion", stride=8)
    with pytest.raises(ValueError, match="no stage of stride 3"):
        saliency(_lite0(), torch.rand(1, 64, 64), "gradcam", stride=3)
