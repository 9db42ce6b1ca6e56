"""2D -> 3D inflation of ImageNet kernels (I3D, Carreira & Zisserman 2017) and its options.

A 3D backbone is built at its 3D shape by MONAI; :func:`inflate_kernel` turns each
2D kernel ``(O, I, k, k)`` of the ImageNet checkpoint into the ``(O, I, t, k, k)`` the
3D network holds. Modes are registered by name (:func:`register_inflation`) so new
ones (2.5D, ACS) can be added without touching the loader.

Exactness. For a volume that repeats one 2D image along depth, an inflated network
reproduces the 2D network's pooled features exactly when every padded depth slice
equals its neighbour:

* ``mode="i3d", depth_padding="replicate"`` (any stem depth kernel, any depth stride);
* ``mode="central"`` (all weight in the middle slice) with either padding.

``mode="i3d"`` with the default zero padding differs near the first and last slices
(the padded zeros enter the depth average), as in the original I3D.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

InflateFn = Callable[[torch.Tensor, int], torch.Tensor]
_INFLATIONS: dict[str, InflateFn] = {}


def register_inflation(name: str) -> Callable[[InflateFn], InflateFn]:
    """Register ``fn(kernel_2d, depth) -> kernel_3d`` under ``name`` (usable as ``inflate=name``)."""

    def deco(fn: InflateFn) -> InflateFn:
        _INFLATIONS[name] = fn
        return fn

    return deco


def list_inflations() -> list[str]:
    """Kernel-level modes accepted by ``inflate=`` and :func:`inflate_kernel`."""
    return sorted(_INFLATIONS)


#: Modes that replace the network's layers instead of inflating kernels: ``"acs"``
#: (:mod:`medtl.models.acs`; ``"2.5d"`` is handled by ``create``, :mod:`medtl.models.slices25d`).
STRUCTURAL_MODES = ("acs",)


@register_inflation("i3d")
def _i3d(kernel: torch.Tensor, depth: int) -> torch.Tensor:
    """Repeat the 2D kernel along depth and divide by depth (a constant-in-depth input
    gives the 2D response)."""
    return kernel.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


@register_inflation("central")
def _central(kernel: torch.Tensor, depth: int) -> torch.Tensor:
    """Put the whole 2D kernel in the middle depth slice, zeros elsewhere (each output
    slice starts as the 2D network applied to its own input slice)."""
    out = kernel.new_zeros(kernel.shape[:2] + (depth,) + kernel.shape[2:])
    out[:, :, depth // 2] = kernel
    return out


@dataclass(frozen=True)
class InflateConfig:
    """How a 3D backbone is derived from its 2D ImageNet version.

    mode: a registered inflation (``"i3d"``, ``"central"``) or ``"acs"`` (structural).
    stem_depth: depth of the stem kernel (1, 3 or 7; ``None`` = the 2D kernel size).
    pool_depth_early: stride 2 over depth in the stem conv and stem max-pool like the
        2D axes (``True``), or keep full depth resolution there (``False``: stride
        ``(1, 2, 2)``), useful for thin volumes.
    depth_padding: ``"zeros"`` (standard) or ``"replicate"`` (replicate the edge slices
        along depth only; makes I3D exact on depth-constant volumes).
    """

    mode: str = "i3d"
    stem_depth: int | None = None
    pool_depth_early: bool = True
    depth_padding: str = "zeros"

    def __post_init__(self) -> None:
        if self.mode not in _INFLATIONS and self.mode not in STRUCTURAL_MODES:
            raise _unknown_mode(self.mode, list_inflations() + list(STRUCTURAL_MODES) + ["2.5d"])
        if self.stem_depth is not None and (not isinstance(self.stem_depth, int) or self.stem_depth < 1
                                            or self.stem_depth % 2 == 0):
            raise ConfigError(f"stem_depth={self.stem_depth!r} (model.kwargs): use an odd positive int "
                              "(1, 3, 7), or leave it unset for the 2D kernel size")
        if self.depth_padding not in ("zeros", "replicate"):
            raise ConfigError(f"depth_padding={self.depth_padding!r} (model.kwargs): use 'zeros' or 'replicate'")

    @classmethod
    def coerce(cls, value: "str | Mapping[str, Any] | InflateConfig | None") -> "InflateConfig":
        """Accept a mode name, a dict of fields, or a config."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(mode=value)
        return cls(**checked_options(cls, value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unknown_mode(mode: Any, choices: list[str]) -> ConfigError:
    return ConfigError(f"unknown inflate mode {mode!r} (model.inflate); choose one of {', '.join(choices)}")


def checked_options(config: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as a dict for the dataclass ``config``; a field it lacks is a
    :class:`~medtl.errors.ConfigError` naming the fields it has (a typo in ``model.kwargs``)."""
    options = dict(options)
    known = [f.name for f in fields(config)]
    unknown = sorted(str(k) for k in options if k not in known)
    if unknown:
        mode = options.get("mode", next(f.default for f in fields(config) if f.name == "mode"))
        raise ConfigError(f"unknown option {', '.join(unknown)} for inflate mode {mode!r} (model.kwargs); "
                          f"it takes {', '.join(k for k in known if k != 'mode')}")
    return options


def inflate_kernel(kernel: torch.Tensor, depth: int, mode: str = "i3d") -> torch.Tensor:
    """2D kernel ``(O, I, kh, kw)`` -> 3D kernel ``(O, I, depth, kh, kw)`` with ``mode``."""
    if kernel.ndim != 4:
        raise ValueError(f"expected a 2D conv kernel (O, I, kh, kw), got shape {tuple(kernel.shape)}")
    try:
        fn = _INFLATIONS[mode]
    except KeyError:
        raise _unknown_mode(mode, list_inflations()) from None
    return fn(kernel, depth)


class DepthReplicateConv3d(nn.Conv3d):
    """``Conv3d`` that pads depth by replicating edge slices and H/W with zeros.

    Built with ``padding=(pd, ph, pw)`` like a normal conv; keeps the same parameter
    names, so state dicts are unchanged. torch's ``padding_mode`` would replicate on
    all three axes, which changes the 2D (H, W) behaviour the ImageNet weights expect.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pd, ph, pw = self.padding  # type: ignore[misc]
        self.depth_pad = int(pd)
        self.padding = (0, ph, pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth_pad:
            x = F.pad(x, (0, 0, 0, 0, self.depth_pad, self.depth_pad), mode="replicate")
        return super().forward(x)


class DepthReplicatePad3d(nn.Module):
    """Replacement for EfficientNet's static ``ConstantPad3d``: zeros on H/W, replicate on depth."""

    def __init__(self, padding: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wl, wr, hl, hr, dl, dr = self.padding
        x = F.pad(x, (wl, wr, hl, hr, 0, 0))
        if dl or dr:
            x = F.pad(x, (0, 0, 0, 0, dl, dr), mode="replicate")
        return x

    def extra_repr(self) -> str:
        return f"padding={self.padding}"


def use_replicate_depth_padding(module: nn.Module) -> nn.Module:
    """Swap every depth-padded ``Conv3d`` / ``ConstantPad3d`` in ``module`` for its
    depth-replicate version (in place, before weights are loaded; names unchanged)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv3d and child.padding[0] > 0:  # type: ignore[index]
                new = DepthReplicateConv3d(
                    child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                    padding=child.padding, dilation=child.dilation, groups=child.groups,
                    bias=child.bias is not None,
                )
                setattr(parent, name, new)
            elif type(child) is nn.ConstantPad3d and child.value == 0:
                setattr(parent, name, DepthReplicatePad3d(child.padding))
    return module
