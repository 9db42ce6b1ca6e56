"""2.5D: a volume classified as its axial slices through the 2D ImageNet network.

Each depth position ``z`` becomes one 2D image whose channels are the slices
``z - n//2 ... z + n//2`` (``slice_channels = n``; edge slices are replicated, so a
one-slice volume gives ``n`` copies of it). The 2D network's pooled features of all
slices are pooled over depth (mean, max or gated attention, Ilse et al. 2018) before
the head. The 2D network is used exactly as ImageNet trained it: no kernel is
inflated, and with 3 neighbours its RGB stem reads (z-1, z, z+1) as (R, G, B).

Normalisation: the volume arrives normalised for ``in_channels`` (the card's
constants, e.g. the gray mean/std for 1 channel); it is mapped back to [0, 1] and
renormalised with the 2D network's own per-channel constants, so a gray volume fed to
the RGB stem sees exactly ImageNet's RGB normalisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .adapt import channel_stats
from .backbone import Backbone, _group
from .inflate import checked_options

POOLS = ("mean", "max", "attention")
MODE = "2.5d"


@dataclass(frozen=True)
class SliceConfig:
    """Options of the 2.5D adaptation (recorded in the model card as ``inflate``).

    slice_channels: odd number of neighbouring slices stacked as channels (1 or 3 usual).
    pool: how slice features are pooled over depth: ``"mean"``, ``"max"``, ``"attention"``.
    slice_stride: use every ``slice_stride``-th depth position (fewer 2D passes).
    """

    mode: str = MODE
    slice_channels: int = 3
    pool: str = "mean"
    slice_stride: int = 1

    def __post_init__(self) -> None:
        if self.mode != MODE:
            raise ConfigError(f"SliceConfig is for inflate mode {MODE!r}, got {self.mode!r} (model.inflate)")
        if not isinstance(self.slice_channels, int) or self.slice_channels < 1 or self.slice_channels % 2 == 0:
            raise ConfigError(f"slice_channels={self.slice_channels!r} (model.kwargs): use an odd positive int "
                              "(1, 3, 5)")
        if self.pool not in POOLS:
            raise ConfigError(f"pool={self.pool!r} (model.kwargs): use one of {', '.join(POOLS)}")
        if not isinstance(self.slice_stride, int) or self.slice_stride < 1:
            raise ConfigError(f"slice_stride={self.slice_stride!r} (model.kwargs): use an int >= 1")

    @classmethod
    def coerce(cls, value: str | Mapping[str, Any] | SliceConfig) -> SliceConfig:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(mode=value.lower())
        fields = checked_options(cls, value)
        fields["mode"] = str(fields.get("mode", MODE)).lower()
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_slice_mode(inflate: Any) -> bool:
    """True when an ``inflate=`` value asks for 2.5D (``"2.5d"`` or a dict/config with that mode)."""
    if isinstance(inflate, SliceConfig):
        return True
    if isinstance(inflate, str):
        return inflate.lower() == MODE
    if isinstance(inflate, Mapping):
        return str(inflate.get("mode", "")).lower() == MODE
    return False


class AttentionPool(nn.Module):
    """Gated attention over slices (Ilse et al., ICML 2018): ``sum_s a_s h_s``, ``a = softmax(w^T (tanh(V h) * sigmoid(U h)))``."""

    def __init__(self, num_features: int, hidden: int = 128) -> None:
        super().__init__()
        self.v = nn.Linear(num_features, hidden)
        self.u = nn.Linear(num_features, hidden)
        self.w = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, S, F) -> (B, F)``."""
        scores = self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h)))  # (B, S, 1)
        return (scores.softmax(dim=1) * h).sum(dim=1)


class SliceBackbone(Backbone):
    """A 2D :class:`Backbone` (``self.net``, built without head) applied slice by slice to volumes.

    ``forward_features`` returns the slice feature maps stacked along depth,
    ``(B, F, S, h, w)``, passed through :attr:`feature_layer` (an identity) so
    Grad-CAM sees one 3D map. ``stages`` are the 2D network's, then the head (with
    the attention pool when ``pool="attention"``).
    """

    def __init__(self, net: Backbone, in_channels: int, num_classes: int | None, cfg: SliceConfig,
                 drop_rate: float = 0.0) -> None:
        if net.spatial_dims != 2 or net.head is not None:
            raise ValueError("SliceBackbone needs a 2D Backbone built with num_classes=None")
        if net.in_channels != in_channels * cfg.slice_channels:
            raise ValueError(f"the 2D network takes {net.in_channels} channels, 2.5D needs "
                             f"{in_channels} x {cfg.slice_channels} slices")
        nn.Module.__init__(self)  # Backbone.__init__ adapts a stem this class does not own
        self.arch = net.arch
        self.net = net
        self.cfg = cfg
        self.num_features = net.num_features
        self.spatial_dims = 3
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.gray_offset = None
        self.drop = nn.Dropout(drop_rate if drop_rate else float(net.drop.p))
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else None
        self.slice_pool = AttentionPool(self.num_features) if cfg.pool == "attention" else None
        self.slice_maps = nn.Identity()
        mean, std = channel_stats(in_channels)
        inner_mean, inner_std = channel_stats(net.in_channels)
        # x_inner = x * scale + shift maps the outer normalisation to the 2D network's
        scale = [std[c % in_channels] / inner_std[c] for c in range(net.in_channels)]
        shift = [(mean[c % in_channels] - inner_mean[c]) / inner_std[c] for c in range(net.in_channels)]
        self.register_buffer("renorm_scale", torch.tensor(scale).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("renorm_shift", torch.tensor(shift).view(1, -1, 1, 1), persistent=False)
        self.card: dict[str, Any] = {
            "arch": self.arch,
            "spatial_dims": 3,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "num_features": self.num_features,
            "inflate": cfg.to_dict(),
            "weights": None,
            "input_adaptation": None,
            "head": "new" if num_classes else None,
            "normalization": {"input_range": [0.0, 1.0], "mean": mean, "std": std},
        }

    @property
    def stem_conv_key(self) -> str:  # type: ignore[override]
        return "net." + self.net.stem_conv_key

    def set_drop_path(self, rate: float) -> None:
        """The 2D network's stochastic depth."""
        self.net.set_drop_path(rate)

    def to_slices(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` -> ``(B * S, n * C, H, W)``: each used depth position with its neighbours.

        Channel order is slice-major: ``[z-1 (all C), z (all C), z+1 (all C)]``.
        """
        b, c, d, h, w = x.shape
        n, half = self.cfg.slice_channels, self.cfg.slice_channels // 2
        centres = torch.arange(0, d, self.cfg.slice_stride, device=x.device)
        offsets = torch.arange(-half, half + 1, device=x.device)
        idx = (centres[:, None] + offsets[None, :]).clamp(0, d - 1)  # (S, n), edges replicated
        s = idx.shape[0]
        slices = x[:, :, idx.reshape(-1)].reshape(b, c, s, n, h, w)  # (B, C, S, n, H, W)
        return slices.permute(0, 2, 3, 1, 4, 5).reshape(b * s, n * c, h, w)

    def slice_features(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Feature maps of every slice ``(B * S, F, h, w)`` and the slice count ``S``."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.arch} 2.5D expects (B, {self.in_channels}, D, H, W) input, "
                             f"got shape {tuple(x.shape)}")
        slices = self.to_slices(x) * self.renorm_scale + self.renorm_shift
        return self.net.forward_features(slices), slices.shape[0] // x.shape[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Slice feature maps stacked along depth, ``(B, F, S, h, w)``."""
        f, s = self.slice_features(x)
        b = x.shape[0]
        maps = f.reshape(b, s, *f.shape[1:]).transpose(1, 2)
        return self.slice_maps(maps)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Per-slice average-pooled features, pooled over slices with ``cfg.pool``: ``(B, F)``."""
        maps = self.forward_features(x)  # (B, F, S, h, w)
        per_slice = maps.mean(dim=(3, 4)).transpose(1, 2)  # (B, S, F)
        if self.cfg.pool == "mean":
            return per_slice.mean(dim=1)
        if self.cfg.pool == "max":
            return per_slice.amax(dim=1)
        return self.slice_pool(per_slice)

    @property
    def feature_layer(self) -> nn.Module:
        return self.slice_maps

    def _stage_list(self) -> list[tuple[str, nn.Module]]:
        return self.net.stages

    @property
    def stages(self) -> list[tuple[str, nn.Module]]:
        out = self._stage_list()
        if self.head is not None:
            extra = [self.slice_pool] if self.slice_pool is not None else []
            out.append(("head", _group(*extra, self.drop, self.head)))
        elif self.slice_pool is not None:
            out.append(("slice_pool", _group(self.slice_pool)))
        return out


def build_slice_model(builder: Any, in_channels: int, num_classes: int | None, cfg: SliceConfig) -> SliceBackbone:
    """The 2D network from ``builder`` (a registered architecture) wrapped for 2.5D."""
    net = builder(spatial_dims=2, in_channels=in_channels * cfg.slice_channels, num_classes=None, inflate=None)
    return SliceBackbone(net, in_channels, num_classes, cfg)
