"""Preprocessing and augmentation on MONAI transforms.

- :class:`Preprocessing`: the one pipeline (train, validation, prediction), serialisable
  into the model card.
- :class:`LoadScand`: path | Scan | array -> channel-first ``MetaTensor``.
- Axis conventions: :func:`to_network_layout`, :func:`from_network_layout`, :func:`array_to_scan`.
- Intensity: :func:`window`, :data:`CT_WINDOWS`, :func:`scale_intensity`, :class:`WindowIntensityd`.
- Augmentation: :func:`augmentations` with the :data:`DOMAIN_SHIFT` presets.
- Test-time augmentation: :func:`tta_views`, :func:`tta_probabilities` (:class:`View`).
"""

from medtl.transforms.augment import (
    DOMAIN_SHIFT,
    augmentations,
    domain_shift_augmentations,
    spatial_augmentations,
)
from medtl.transforms.intensity import (
    CT_WIDE_WINDOW,
    CT_WINDOWS,
    WindowIntensity,
    WindowIntensityd,
    parse_window,
    resolve_window,
    scale_intensity,
    window,
)
from medtl.transforms.layout import (
    ToNetworkLayout,
    ToNetworkLayoutd,
    array_to_scan,
    from_network_layout,
    to_network_layout,
)
from medtl.transforms.load import LoadScan, LoadScand, as_scan
from medtl.transforms.preprocessing import PREPROCESSING_VERSION, Preprocessing
from medtl.transforms.utility import (
    EnsureChannels,
    EnsureChannelsd,
    ImageNetNormalize,
    ImageNetNormalized,
    MedtlCompose,
    unwrap_error,
)
from medtl.transforms.tta import View, apply_view, tta_probabilities, tta_views

__all__ = [
    "CT_WIDE_WINDOW", "CT_WINDOWS", "DOMAIN_SHIFT", "PREPROCESSING_VERSION",
    "EnsureChannels", "EnsureChannelsd", "ImageNetNormalize", "ImageNetNormalized", "LoadScan", "LoadScand",
    "MedtlCompose", "Preprocessing", "ToNetworkLayout", "ToNetworkLayoutd", "View", "WindowIntensity",
    "WindowIntensityd",
    "array_to_scan", "as_scan", "augmentations", "domain_shift_augmentations", "from_network_layout",
    "parse_window", "resolve_window", "scale_intensity", "spatial_augmentations", "to_network_layout",
    "apply_view", "tta_probabilities", "tta_views",
    "unwrap_error", "window",
]
