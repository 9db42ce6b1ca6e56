"""Saliency maps for 2D and 3D models (issues #5, #16): class activation maps at any backbone stage
(LayerCAM, HiResCAM, Grad-CAM, Grad-CAM++), occlusion sensitivity, Integrated Gradients, SmoothGrad.

    >>> import os, tempfile
    >>> from medtl import explain, models
    >>> from medtl.demo.cohort import sample_path
    >>> from medtl.io import load_scan
    >>> from medtl.transforms import Preprocessing
    >>> model = models.create("resnet18", in_channels=1, spatial_dims=3, num_classes=2).eval()  # untrained: use yours
    >>> prep = Preprocessing(spatial_dims=3, size=[16, 16, 16], window="soft_tissue")
    >>> x = prep(sample_path("ct3d"))                     # (C, D, H, W) network input
    >>> explain.saliency(model, x).shape                  # (D, H, W) in [0, 1]
    (16, 16, 16)
    >>> scan = load_scan(sample_path("ct3d"))             # a NIfTI volume
    >>> sal, info = explain.saliency_for_scan(model, prep, scan)   # default method, in the scan's geometry
    >>> sal.shape == scan.shape
    True
    >>> tmp = tempfile.TemporaryDirectory(); out = tmp.name
    >>> _ = explain.save_saliency_nifti(sal, os.path.join(out, "ct_saliency.nii.gz"))   # same affine as the scan
    >>> k = scan.shape[2] // 2                            # the middle axial slice
    >>> pic = explain.heatmap_overlay(explain.display_slice(scan.array, k), explain.display_slice(sal.array, k))
    >>> _ = explain.save_overlay_png(os.path.join(out, f"ct_k{k}.png"), pic)
    >>> tmp.cleanup()

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
