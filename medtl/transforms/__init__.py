"""Preprocessing and augmentation on MONAI transforms.

- :class:`Preprocessing`: the one pipeline (train, validation, prediction), serialisable
  into the model card.
- :class:`LoadScand`: path | Scan | array -> channel-first ``MetaTensor``.
- Axis conventions: :func:`to_network_layout`, :func:`from_network_layout`, :func:`array_to_scan`.
- Intensity: :func:`window`, :data:`CT_WINDOWS`, :func:`scale_intensity`, :class:`WindowIntensityd`.
- Augmentation: :func:`augmentations` with the :data:`DOMAIN_SHIFT` presets.
- Test-time augmentation: :func:`tta_views`, :func:`tta_probabilities` (:class:`View`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medtl._lazy import lazy_getattr

# The names load on first use (PEP 562), as in medtl.models: the config schema imports
# medtl.transforms.config, and `medtl configs --reference` or load_config must not pay for MONAI and torch.
_WHERE = {
    "DOMAIN_SHIFT": "augment", "augmentations": "augment", "domain_shift_augmentations": "augment",
    "spatial_augmentations": "augment",
    "CT_WIDE_WINDOW": "intensity", "CT_WINDOWS": "intensity", "WindowIntensity": "intensity",
    "WindowIntensityd": "intensity", "parse_window": "intensity", "resolve_window": "intensity",
    "scale_intensity": "intensity", "window": "intensity",
    "ToNetworkLayout": "layout", "ToNetworkLayoutd": "layout", "array_to_scan": "layout",
    "from_network_layout": "layout", "to_network_layout": "layout",
    "LoadScan": "load", "LoadScand": "load", "as_scan": "load",
    "PREPROCESSING_VERSION": "preprocessing", "Preprocessing": "preprocessing",
    "EnsureChannels": "utility", "EnsureChannelsd": "utility", "ImageNetNormalize": "utility",
    "ImageNetNormalized": "utility", "MedtlCompose": "utility", "unwrap_error": "utility",
    "View": "tta", "apply_view": "tta", "tta_probabilities": "tta", "tta_views": "tta",
}

if TYPE_CHECKING:
    from .augment import (
        DOMAIN_SHIFT,
        augmentations,
        domain_shift_augmentations,
        spatial_augmentations,
    )
    from .intensity import (
        CT_WIDE_WINDOW,
        CT_WINDOWS,
        WindowIntensity,
        WindowIntensityd,
        parse_window,
        resolve_window,
        scale_intensity,
        window,
    )
    from .layout import (
        ToNetworkLayout,
        ToNetworkLayoutd,
        array_to_scan,
        from_network_layout,
        to_network_layout,
    )
    from .load import (
        LoadScan,
        LoadScand,
        as_scan,
    )
    from .preprocessing import (
        PREPROCESSING_VERSION,
        Preprocessing,
    )
    from .utility import (
        EnsureChannels,
        EnsureChannelsd,
        ImageNetNormalize,
        ImageNetNormalized,
        MedtlCompose,
        unwrap_error,
    )
    from .tta import (
        View,
        apply_view,
        tta_probabilities,
        tta_views,
    )


__getattr__ = lazy_getattr(__name__, _WHERE)

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
