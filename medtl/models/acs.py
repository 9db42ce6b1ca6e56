"""ACS convolutions: 2D ImageNet kernels used unchanged on 3D volumes (Yang et al., IEEE JBHI 2021).

An ACS convolution keeps the 2D kernel ``(O, I, k, k)`` as its parameter and splits
the output channels into three groups, each applying its 2D kernels in one plane of
the volume ``(D, H, W)``:

* axial (first ``O_a`` channels): kernel over ``(H, W)``, thickness 1 in depth;
* coronal (next ``O_c``): kernel over ``(D, W)``, thickness 1 in height;
* sagittal (last ``O_s``): kernel over ``(D, H)``, thickness 1 in width.

The split is acsconv's (``O_a >= O_c >= O_s``, differing by at most one). Unlike I3D
the parameters stay 2D during training, so the network keeps 2D-kernel capacity and
the ImageNet kernels are never blurred across depth.

Why not the ``acsconv`` package: its ``ACSConverter`` fails on current torch (it
rebuilds ``BatchNorm`` with keyword arguments torch rejects), and its ``ACSConv`` layer
assumes the padding lives inside the conv, whereas MONAI's EfficientNet pads outside
with static, possibly asymmetric TF-"same" padders, and medtl may replicate-pad depth.
:class:`ACSConv3d` instead reproduces *exactly* the 3D convolution whose ``(k, k, k)``
kernel holds each 2D kernel in the central plane of its group
(:func:`acs_kernel`), for any
stride, dilation, groups and padding, while computing only the thin kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .inflate import DepthReplicateConv3d

#: Spatial axis (of a ``(B, C, D, H, W)`` tensor) that each group's kernel is thin along.
_THIN_AXIS = {"axial": 2, "coronal": 3, "sagittal": 4}
GROUPS = ("axial", "coronal", "sagittal")
from medtl.errors import ConfigError


def acs_split(out_channels: int) -> tuple[int, int, int]:
    """Output channels per group ``(axial, coronal, sagittal)``: thirds, the remainder to
    the first groups (acsconv's rule)."""
    base, rem = divmod(out_channels, 3)
    return tuple(base + (1 if i < rem else 0) for i in range(3))  # type: ignore[return-value]


def acs_kernel(kernel: torch.Tensor, split: tuple[int, int, int] | None = None) -> torch.Tensor:
    """The dense 3D kernel ``(O, I, k, k, k)`` equivalent to ACS on a 2D kernel ``(O, I, k, k)``.

    Axial channels hold the 2D kernel in the plane ``d = k // 2``, coronal in
    ``h = k // 2``, sagittal in ``w = k // 2``; everything else is zero.
    """
    if kernel.ndim != 4 or kernel.shape[2] != kernel.shape[3]:
        raise ValueError(f"ACS needs a square 2D kernel (O, I, k, k), got shape {tuple(kernel.shape)}")
    o, _, k, _ = kernel.shape
    a, c, _ = split or acs_split(o)
    out = kernel.new_zeros(kernel.shape[:2] + (k, k, k))
    mid = k // 2
    out[:a, :, mid, :, :] = kernel[:a]
    out[a:a + c, :, :, mid, :] = kernel[a:a + c]
    out[a + c:, :, :, :, mid] = kernel[a + c:]
    return out


class ACSConv3d(nn.Module):
    """A 3D convolution made of 2D kernels split over the three orthogonal planes.

    Parameters ``weight (O, I/groups, k, k)`` and ``bias (O,)`` have the 2D checkpoint's
    shapes, so ImageNet weights load without inflation. Output equals
    ``F.conv3d(x, acs_kernel(weight), ...)`` with the same stride, padding, dilation
    and groups (:meth:`dense_kernel`); ordinary convs compute only the thin kernels
    (``1/k`` of the dense multiply-adds), grouped ones use the dense kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: tuple[int, int, int] = (1, 1, 1),
                 padding: tuple[int, int, int] = (0, 0, 0), dilation: tuple[int, int, int] = (1, 1, 1),
                 groups: int = 1, bias: bool = False, depth_replicate: bool = False) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups {groups}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, int(kernel_size)
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.groups = groups
        self.depth_replicate = depth_replicate
        self.split = acs_split(out_channels)
        k = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Conv2d's default initialisation

    @classmethod
    def from_conv(cls, conv: nn.Conv3d) -> ACSConv3d:
        """An ACS layer with ``conv``'s geometry (kernel must be cubic); weights are fresh."""
        k = conv.kernel_size
        if not (k[0] == k[1] == k[2]):
            raise ConfigError(f"model.inflate=acs needs cubic 3D kernels, got {tuple(k)} (leave "
                              f"model.kwargs.stem_depth unset with inflate='acs')")
        padding = conv.padding
        if isinstance(padding, str):
            raise TypeError(f"ACS needs numeric conv padding, got {padding!r}")
        if isinstance(conv, DepthReplicateConv3d):
            padding = (conv.depth_pad,) + tuple(padding[1:])
        return cls(conv.in_channels, conv.out_channels, k[0], conv.stride, padding, conv.dilation, conv.groups,
                   conv.bias is not None, depth_replicate=isinstance(conv, DepthReplicateConv3d))

    def dense_kernel(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The equivalent dense ``(O, I/groups, k, k, k)`` kernel."""
        return acs_kernel(self.weight if weight is None else weight, self.split)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pd, ph, pw = self.padding
        if self.depth_replicate:
            x = F.pad(x, (pw, pw, ph, ph, 0, 0))
            return F.pad(x, (0, 0, 0, 0, pd, pd), mode="replicate") if pd else x
        return F.pad(x, (pw, pw, ph, ph, pd, pd)) if (pd or ph or pw) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        x = self._pad(x)
        k = self.kernel_size
        if k == 1:
            return F.conv3d(x, w.unsqueeze(2), self.bias, self.stride, 0, self.dilation, self.groups)
        if self.groups > 1:
            # Grouped/depthwise: torch's CPU depthwise conv3d costs about the same for a
            # dense k^3 kernel as for three thin ones, so one call on the dense kernel
            # (which also allows splits inside a conv group).
            return F.conv3d(x, self.dense_kernel(), self.bias, self.stride, 0, self.dilation, self.groups)
        # Output size of the dense k^3 conv on the padded input; a thin axis reads the
        # central tap only: padded positions dilation*(k//2) + stride*i.
        out_size = [(n - self.dilation[i] * (k - 1) - 1) // self.stride[i] + 1 for i, n in enumerate(x.shape[2:])]
        outs, start = [], 0
        for name, n_out in zip(GROUPS, self.split):
            if n_out == 0:
                continue
            axis = _THIN_AXIS[name]
            w_g = w[start:start + n_out].unsqueeze(axis)
            b_g = self.bias[start:start + n_out] if self.bias is not None else None
            i = axis - 2
            x_g = x.narrow(axis, self.dilation[i] * (k // 2), (out_size[i] - 1) * self.stride[i] + 1)
            outs.append(F.conv3d(x_g, w_g, b_g, self.stride, 0, self.dilation))
            start += n_out
        return torch.cat(outs, dim=1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, split={self.split}, bias={self.bias is not None}"
                + (", depth_replicate=True" if self.depth_replicate else ""))


def convert_to_acs(module: nn.Module) -> nn.Module:
    """Replace every ``Conv3d`` in ``module`` by an :class:`ACSConv3d` of the same geometry (in place).

    Parameter names are unchanged (``...conv.weight`` becomes 2D-shaped), so 2D
    ImageNet checkpoints load into the converted network without inflation.
    """
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv3d):
                setattr(parent, name, ACSConv3d.from_conv(child))
    return module
