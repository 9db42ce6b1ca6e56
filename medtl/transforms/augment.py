"""Training-time augmentation: spatial jitter and a *domain-shift* preset imitating another scanner or site.

All transforms are MONAI dictionary transforms working on images in network
layout (``(C, H, W)`` or ``(C, D, H, W)``) with intensities in ``[0, 1]``, in 2D
and 3D. The domain-shift strengths are in one table, :data:`DOMAIN_SHIFT`:

===================  ==========================================  ==============  ==============
name                 imitates                                    mild            strong
===================  ==========================================  ==============  ==============
bias_field           coil / heel-effect shading (RandBiasField)  p .2, c 0-.1    p .3, c 0-.3
gamma                another display/reconstruction LUT          p .3, .8-1.25   p .4, .6-1.6
histogram_shift      a non-linear vendor intensity mapping       p .2, 8-12 pts  p .3, 4-8 pts
noise                lower dose / field strength (Gaussian;      p .2, sd 0-.02  p .3, sd 0-.05
                     Rician for MR)
smooth               a softer reconstruction kernel              p .15, s .25-.75 p .2, s .5-1.5
sharpen              a sharper reconstruction kernel             p .1, a 1-3     p .15, a 3-8
low_resolution       a coarser acquisition matrix                p .15, z .6-1   p .25, z .35-.8
gibbs                k-space truncation ringing                  p .1, a 0-.3    p .2, a .2-.6
kspace_spike         a spike artifact (MR only)                  p .05           p .1
===================  ==========================================  ==============  ==============

(p = probability per image, c = bias coefficients (a polynomial of degree 3 in 2D, 2 in 3D: see
:data:`BIAS_FIELD_DEGREE`), sd = noise standard
deviation (drawn uniformly up to it, in ``[0, 1]`` units), s = blur sigma in
voxels, a = sharpening strength / Gibbs alpha, z = downsampling factor.) After
the intensity transforms the image is clipped back to ``[0, 1]`` (``clip=True``),
so noise and sharpening never leave the range the normalisation expects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from monai.transforms import (
    MapTransform,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandGaussianSmoothd,
    RandGibbsNoised,
    RandHistogramShiftd,
    RandKSpaceSpikeNoised,
    RandRicianNoised,
    RandSimulateLowResolutiond,
    RandZoomd,
    ScaleIntensityRanged,
)

from medtl.errors import ConfigError
from medtl.transforms.config import AugmentConfig

#: Domain-shift presets: transform name -> parameters (see the module docstring table).
DOMAIN_SHIFT: dict[str, dict[str, dict[str, Any]]] = {
    "mild": {
        "bias_field": {"prob": 0.2, "coeff_range": (0.0, 0.1)},
        "gamma": {"prob": 0.3, "gamma": (0.8, 1.25)},
        "histogram_shift": {"prob": 0.2, "num_control_points": (8, 12)},
        "noise": {"prob": 0.2, "std": 0.02},
        "smooth": {"prob": 0.15, "sigma": (0.25, 0.75)},
        "sharpen": {"prob": 0.1, "alpha": (1.0, 3.0)},
        "low_resolution": {"prob": 0.15, "zoom_range": (0.6, 1.0)},
        "gibbs": {"prob": 0.1, "alpha": (0.0, 0.3)},
        "kspace_spike": {"prob": 0.05},
    },
    "strong": {
        "bias_field": {"prob": 0.3, "coeff_range": (0.0, 0.3)},
        "gamma": {"prob": 0.4, "gamma": (0.6, 1.6)},
        "histogram_shift": {"prob": 0.3, "num_control_points": (4, 8)},
        "noise": {"prob": 0.3, "std": 0.05},
        "smooth": {"prob": 0.2, "sigma": (0.5, 1.5)},
        "sharpen": {"prob": 0.15, "alpha": (3.0, 8.0)},
        "low_resolution": {"prob": 0.25, "zoom_range": (0.35, 0.8)},
        "gibbs": {"prob": 0.2, "alpha": (0.2, 0.6)},
        "kspace_spike": {"prob": 0.1},
    },
}


def _interp(spatial_dims: int) -> str:
    return "bilinear" if spatial_dims == 2 else "trilinear"


def spatial_augmentations(cfg: AugmentConfig, spatial_dims: int, size: Sequence[int] | None = None,
                          keys: Sequence[str] = ("image",)) -> list[MapTransform]:
    """Flips, rotation + shift (one ``RandAffined``), isotropic zoom (``RandZoomd``) and elastic deformation.

    Axes are network-layout spatial axes: 2D ``(H, W)``, 3D ``(D, H, W)``; the
    default flip is left-right, the last axis. In 3D the rotation is about the
    depth axis only (in-plane), since slice order carries anatomy. ``size`` (the
    network input size) is needed for shifts (a fraction of it) and elastic
    deformation (control-point spacing and magnitude scale with it).
    """
    keys = list(keys)
    out: list[MapTransform] = []
    if cfg.flip:
        axes = cfg.flip_axes if cfg.flip_axes is not None else [spatial_dims - 1]
        for ax in axes:
            if not -spatial_dims <= ax < spatial_dims:
                raise ConfigError(f"augment.flip_axes: axis {ax} does not exist for {spatial_dims}D images "
                                  f"(use axes 0..{spatial_dims - 1})")
            out.append(RandFlipd(keys, prob=0.5, spatial_axis=ax % spatial_dims))
    needs_size = cfg.shift > 0 or cfg.elastic
    if needs_size and not size:
        raise ValueError("augmentation with shift or elastic deformation needs the image size (size=...)")
    sz = [int(s) for s in size] if size else []
    if len(sz) == 1:
        sz = sz * spatial_dims
    rotate = math.radians(cfg.rotate_deg)
    if rotate > 0 or cfg.shift > 0:
        rotate_range = None
        if rotate > 0:
            rotate_range = (rotate,) if spatial_dims == 2 else (rotate, 0.0, 0.0)
        translate = [cfg.shift * s for s in sz] if cfg.shift > 0 else None
        out.append(RandAffined(keys, prob=1.0, rotate_range=rotate_range, translate_range=translate,
                               mode="bilinear", padding_mode="zeros"))
    if tuple(cfg.zoom) != (1.0, 1.0):
        lo, hi = sorted(float(z) for z in cfg.zoom)
        out.append(RandZoomd(keys, prob=1.0, min_zoom=lo, max_zoom=hi, mode=_interp(spatial_dims),
                             padding_mode="constant", keep_size=True))
    if cfg.elastic:
        n = min(sz)
        if spatial_dims == 2:
            out.append(Rand2DElasticd(keys, spacing=max(4, n // 6), magnitude_range=(n / 64, n / 32), prob=0.3,
                                      mode="bilinear", padding_mode="zeros"))
        else:
            out.append(Rand3DElasticd(keys, sigma_range=(5.0, 7.0), magnitude_range=(2.0 * n, 5.0 * n), prob=0.3,
                                      mode="bilinear", padding_mode="zeros"))
    return out


#: Degree of the bias-field polynomial per spatial dimension. Both have 10 terms, so one preset shades a
#: volume as strongly as an image: at degree 3 a volume has 20, and over 200 draws of ``strong`` the
#: field's peak gain had a median of 20.7x (95th percentile 37.5x) against 4.5x (7.0x) in 2D;
#: at degree 2 the 3D figures equal the 2D ones.
BIAS_FIELD_DEGREE = {2: 3, 3: 2}


def domain_shift_augmentations(strength: str, spatial_dims: int, modality: str | None = None,
                               keys: Sequence[str] = ("image",)) -> list[MapTransform]:
    """Intensity/quality transforms of a :data:`DOMAIN_SHIFT` preset (``"none"`` gives ``[]``).

    ``modality="MR"`` switches noise to Rician and adds k-space spikes.
    """
    if strength == "none":
        return []
    if strength not in DOMAIN_SHIFT:
        raise ValueError(f"domain_shift must be none, {' or '.join(DOMAIN_SHIFT)}, got {strength!r}")
    p = DOMAIN_SHIFT[strength]
    keys = list(keys)
    is_mr = str(modality or "").upper() == "MR"
    sigma = p["smooth"]["sigma"]
    out: list[MapTransform] = [
        RandBiasFieldd(keys, prob=p["bias_field"]["prob"], coeff_range=p["bias_field"]["coeff_range"],
                       degree=BIAS_FIELD_DEGREE[spatial_dims]),
        RandAdjustContrastd(keys, prob=p["gamma"]["prob"], gamma=p["gamma"]["gamma"]),
        RandHistogramShiftd(keys, prob=p["histogram_shift"]["prob"],
                            num_control_points=p["histogram_shift"]["num_control_points"]),
    ]
    if is_mr:
        out.append(RandRicianNoised(keys, prob=p["noise"]["prob"], std=p["noise"]["std"]))
    else:
        out.append(RandGaussianNoised(keys, prob=p["noise"]["prob"], std=p["noise"]["std"]))
    out += [
        RandGaussianSmoothd(keys, prob=p["smooth"]["prob"], sigma_x=sigma, sigma_y=sigma, sigma_z=sigma),
        RandGaussianSharpend(keys, prob=p["sharpen"]["prob"], alpha=p["sharpen"]["alpha"]),
        RandSimulateLowResolutiond(keys, prob=p["low_resolution"]["prob"],
                                   zoom_range=p["low_resolution"]["zoom_range"],
                                   upsample_mode=_interp(spatial_dims)),
        RandGibbsNoised(keys, prob=p["gibbs"]["prob"], alpha=p["gibbs"]["alpha"]),
    ]
    if is_mr:
        out.append(RandKSpaceSpikeNoised(keys, prob=p["kspace_spike"]["prob"]))
    return out


def augmentations(cfg: AugmentConfig, spatial_dims: int, modality: str | None = None,
                  size: Sequence[int] | None = None, clip: bool = True,
                  keys: Sequence[str] = ("image",)) -> list[MapTransform]:
    """All random transforms for ``cfg``: spatial first, then the domain-shift preset, then a clip to ``[0, 1]``.

    ``clip=False`` (used when the window is ``"none"``, i.e. values are not in
    ``[0, 1]``) leaves intensities unclipped.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    out = spatial_augmentations(cfg, spatial_dims, size=size, keys=keys)
    shift = domain_shift_augmentations(cfg.domain_shift, spatial_dims, modality=modality, keys=keys)
    out += shift
    if shift and clip:
        out.append(ScaleIntensityRanged(list(keys), a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    return out
