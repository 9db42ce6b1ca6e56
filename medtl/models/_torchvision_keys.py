"""Key names and shapes of the ImageNet checkpoints medtl loads, written out by hand.

torchvision is not a dependency, yet the loader must be provable against its exact
format: these tables give torchvision's ``state_dict`` layout for ResNet-18/34/50
and DenseNet-121 (optionally with the legacy ``norm.1`` DenseNet names of the
published file) and the lukemelas layout of EfficientNet-Lite0. Tests build random
checkpoints from them; :func:`fake_state_dict` is also handy for offline demos.
"""

from __future__ import annotations

import torch

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{n}": (() if n == "num_batches_tracked" else (c,)) for n in _BN}


def _resnet(block: str, layers: list[int]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    expansion = 4 if block == "bottleneck" else 1
    inplanes = 64
    for i, n in enumerate(layers):
        planes = 64 * 2**i
        for b in range(n):
            p = f"layer{i + 1}.{b}"
            stride = 2 if (i > 0 and b == 0) else 1
            if block == "basic":
                out[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                out.update(_bn(f"{p}.bn1", planes))
                out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                out.update(_bn(f"{p}.bn2", planes))
            else:
                out[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                out.update(_bn(f"{p}.bn1", planes))
                out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                out.update(_bn(f"{p}.bn2", planes))
                out[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                out.update(_bn(f"{p}.bn3", planes * 4))
            if stride != 1 or inplanes != planes * expansion:
                out[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                out.update(_bn(f"{p}.downsample.1", planes * expansion))
            inplanes = planes * expansion
    out["fc.weight"] = (1000, 512 * expansion)
    out["fc.bias"] = (1000,)
    return out


def _densenet121(legacy: bool) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {"features.conv0.weight": (64, 3, 7, 7), **_bn("features.norm0", 64)}
    c = 64
    sep = "." if legacy else ""
    for bi, n in enumerate((6, 12, 24, 16), start=1):
        for li in range(1, n + 1):
            p = f"features.denseblock{bi}.denselayer{li}"
            out.update(_bn(f"{p}.norm{sep}1", c))
            out[f"{p}.conv{sep}1.weight"] = (128, c, 1, 1)
            out.update(_bn(f"{p}.norm{sep}2", 128))
            out[f"{p}.conv{sep}2.weight"] = (32, 128, 3, 3)
            c += 32
        if bi < 4:
            out.update(_bn(f"features.transition{bi}.norm", c))
            out[f"features.transition{bi}.conv.weight"] = (c // 2, c, 1, 1)
            c //= 2
    out.update(_bn("features.norm5", c))
    out["classifier.weight"] = (1000, c)
    out["classifier.bias"] = (1000,)
    return out


def _efficientnet_lite0() -> dict[str, tuple[int, ...]]:
    from .backbone import LITE0_BLOCKS

    out: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (32, 3, 3, 3), **_bn("_bn0", 32)}
    idx = 0
    for spec in LITE0_BLOCKS:
        opts = dict((part[0], part[1:]) for part in spec.split("_"))
        reps, k, e = int(opts["r"]), int(opts["k"]), int(opts["e"])
        cin, cout = int(opts["i"]), int(opts["o"])
        for r in range(reps):
            inp = cin if r == 0 else cout
            oup = inp * e
            p = f"_blocks.{idx}"
            if e != 1:
                out[f"{p}._expand_conv.weight"] = (oup, inp, 1, 1)
                out.update(_bn(f"{p}._bn0", oup))
            out[f"{p}._depthwise_conv.weight"] = (oup, 1, k, k)
            out.update(_bn(f"{p}._bn1", oup))
            out[f"{p}._project_conv.weight"] = (cout, oup, 1, 1)
            out.update(_bn(f"{p}._bn2", cout))
            idx += 1
    out["_conv_head.weight"] = (1280, 320, 1, 1)
    out.update(_bn("_bn1", 1280))
    out["_fc.weight"] = (1000, 1280)
    out["_fc.bias"] = (1000,)
    return out


def checkpoint_shapes(arch: str, legacy: bool = False) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the published ImageNet checkpoint of ``arch``.

    ``legacy=True`` gives DenseNet's pre-0.4 names (``denselayer1.norm.1.weight``) as
    in ``densenet121-a639ec97.pth``, which (predating torch 0.4) has no
    ``num_batches_tracked`` buffers; ignored for the other architectures.
    """
    if arch == "resnet18":
        return _resnet("basic", [2, 2, 2, 2])
    if arch == "resnet34":
        return _resnet("basic", [3, 4, 6, 3])
    if arch == "resnet50":
        return _resnet("bottleneck", [3, 4, 6, 3])
    if arch == "densenet121":
        shapes = _densenet121(legacy)
        if legacy:
            shapes = {k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}
        return shapes
    if arch == "efficientnet_lite0":
        return _efficientnet_lite0()
    raise ValueError(f"no checkpoint layout for {arch!r}")


def fake_state_dict(arch: str, seed: int = 0, legacy: bool = False) -> dict[str, torch.Tensor]:
    """A checkpoint of ``arch`` in its published format with random values.

    Conv kernels ~ N(0, 2/fan_in) (He), BN affine near 1/0 and positive running
    variances, so a network loaded from it gives finite, non-trivial activations.
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in checkpoint_shapes(arch, legacy).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            out[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) >= 2:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            out[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif key.endswith(".weight"):
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[key] = 0.1 * torch.randn(shape, generator=g)
    return out
