"""Saliency maps for 2D and 3D models (issue #5): Grad-CAM, Grad-CAM++, occlusion sensitivity.

    >>> from medtl import explain
    >>> m = explain.saliency(model, x)                    # x: (C, H, W) network input -> (H, W) in [0, 1]
    >>> sal, info = explain.saliency_for_scan(model, prep, "ct.nii.gz", method="gradcam")
    >>> explain.save_saliency_nifti(sal, "ct_gradcam.nii.gz")   # same affine as the scan
    >>> pic = explain.overlay(explain.display_slice(scan.array, 40), explain.display_slice(sal.array, 40))
    >>> explain.save_overlay_png("ct_gradcam_k40.png", pic)

The computation is MONAI's (``monai.visualize``); the hooked layer is always
``model.feature_layer``; maps go back to the scan's geometry through the
affines MONAI tracks in preprocessing.
"""

from medtl.explain.geometry import SALIENCY_MODALITY, map_to_scan, prepare, saliency_for_scan
from medtl.explain.overlay import (
    PLANES,
    display_aspect,
    display_slice,
    overlay,
    save_overlay_png,
    save_saliency_nifti,
    to_display_orientation,
    window_to_unit,
)
from medtl.explain.saliency import (
    METHODS,
    OCCLUSION_DEFAULTS,
    Explanation,
    explain,
    feature_layer_name,
    normalize_map,
    occlusion_settings,
    saliency,
)

__all__ = [
    "METHODS",
    "OCCLUSION_DEFAULTS",
    "PLANES",
    "SALIENCY_MODALITY",
    "Explanation",
    "display_aspect",
    "display_slice",
    "explain",
    "feature_layer_name",
    "map_to_scan",
    "normalize_map",
    "occlusion_settings",
    "overlay",
    "prepare",
    "saliency",
    "saliency_for_scan",
    "save_overlay_png",
    "save_saliency_nifti",
    "to_display_orientation",
    "window_to_unit",
]
