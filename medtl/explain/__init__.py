"""Saliency maps for 2D and 3D models (issues #5, #16): class activation maps at any backbone stage
(LayerCAM, HiResCAM, Grad-CAM, Grad-CAM++), occlusion sensitivity, Integrated Gradients, SmoothGrad.

    >>> from medtl import explain
    >>> m = explain.saliency(model, x)                    # x: (C, H, W) network input -> (H, W) in [0, 1]
    >>> sal, info = explain.saliency_for_scan(model, prep, "ct.nii.gz")   # default method
    >>> explain.save_saliency_nifti(sal, "ct_saliency.nii.gz")   # same affine as the scan
    >>> pic = explain.heatmap_overlay(explain.display_slice(scan.array, 40), explain.display_slice(sal.array, 40))
    >>> explain.save_overlay_png("ct_k40.png", pic)

:data:`DEFAULT_METHOD` is the measured winner of ``benchmarks/saliency.py``;
maps go back to the scan's geometry through the affines MONAI tracks in preprocessing.
"""

from medtl.explain.geometry import SALIENCY_MODALITY, map_to_scan, prepare, saliency_for_scan
from medtl.explain.cam import CAM_KINDS, StageLayer, stage_layers, stage_modules
from medtl.explain.overlay import (
    PLANES,
    SALIENCY_ALPHA,
    SALIENCY_CMAP,
    SALIENCY_THRESHOLD,
    colour_bar,
    contour_mask,
    heatmap_overlay,
    labelled_overlay,
    display_aspect,
    display_slice,
    overlay,
    overlay_view,
    save_overlay_png,
    save_saliency_nifti,
    to_display_orientation,
    window_to_unit,
)
from medtl.explain.evaluate import deletion_score, mass_inside, method_title, pointing_hit, saliency_card
from medtl.explain.saliency import (
    CAM_STRIDES,
    DEFAULT_METHOD,
    METHOD_TITLES,
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
    "CAM_KINDS",
    "CAM_STRIDES",
    "DEFAULT_METHOD",
    "METHODS",
    "METHOD_TITLES",
    "SALIENCY_ALPHA",
    "SALIENCY_CMAP",
    "SALIENCY_THRESHOLD",
    "colour_bar",
    "StageLayer",
    "contour_mask",
    "deletion_score",
    "mass_inside",
    "pointing_hit",
    "heatmap_overlay",
    "labelled_overlay",
    "method_title",
    "saliency_card",
    "stage_layers",
    "stage_modules",
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
    "overlay_view",
    "prepare",
    "saliency",
    "saliency_for_scan",
    "save_overlay_png",
    "save_saliency_nifti",
    "to_display_orientation",
    "window_to_unit",
]
