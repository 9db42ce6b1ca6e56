"""Graded image corruptions for measuring robustness to a change of site, in the manner of
MedMNIST-C (Di Salvo et al., 2024): each corruption has 5 severities and acts on an image in
``[0, 1]`` (``(H, W)`` gray or ``(H, W, 3)`` colour), before medtl's preprocessing, like a file
coming from another scanner would.

Built from MONAI transforms where one exists (noise, blur, gamma, pixelation, brightness);
speckle, impulse noise, motion blur, contrast and JPEG are a few lines each here because MONAI
has no deterministic form of them (the ``medmnistc`` package itself pulls torchvision and a
CUDA torch, so its published list is followed, not the package).

    >>> import numpy as np
    >>> from medtl.transforms.corruptions import corrupt, CORRUPTIONS
    >>> image01 = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)   # an image in [0, 1]
    >>> worse = corrupt(image01, "pixelate", severity=3, seed=0)
    >>> worse.shape, worse.dtype.name, "pixelate" in CORRUPTIONS
    ((28, 28), 'float32', True)
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from monai.transforms import AdjustContrast, GaussianSmooth, Resize, ShiftIntensity

__all__ = ["CORRUPTIONS", "SEVERITIES", "MODALITY_CORRUPTIONS", "corrupt", "corrupt_uint8"]

SEVERITIES = (1, 2, 3, 4, 5)

#: Parameter of each corruption at severities 1..5 (see the functions below for their meaning).
LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.02, 0.04, 0.06, 0.08, 0.10),  # sd, in [0, 1] units
    "speckle_noise": (0.06, 0.10, 0.15, 0.20, 0.30),  # sd of multiplicative noise
    "impulse_noise": (0.01, 0.02, 0.04, 0.06, 0.09),  # fraction of salt-and-pepper pixels
    "gaussian_blur": (0.4, 0.6, 0.8, 1.0, 1.3),  # sigma, pixels (at 28 px)
    "motion_blur": (2, 3, 4, 5, 6),  # length of the blur line, pixels
    "pixelate": (0.75, 0.6, 0.4, 0.3, 0.25),  # down-sampling factor (0.5 skipped: its 2x2 blocks alias less)
    "jpeg": (40, 25, 15, 10, 6),  # JPEG quality
    "brightness_up": (0.05, 0.1, 0.15, 0.2, 0.25),  # added
    "brightness_down": (0.05, 0.1, 0.15, 0.2, 0.25),  # subtracted
    "contrast_up": (1.15, 1.3, 1.45, 1.6, 1.8),  # factor about the mean
    "contrast_down": (0.85, 0.7, 0.6, 0.5, 0.4),
    "gamma_up": (1.2, 1.4, 1.6, 1.8, 2.0),  # exponent (darker mid-tones)
    "gamma_down": (0.85, 0.75, 0.65, 0.55, 0.45),  # (brighter mid-tones)
}

#: Corruptions per kind of image (MedMNIST-C's lists: X-ray has no colour; fundus gets no
#: contrast/brightness increase, which a fundus camera's exposure does not produce).
MODALITY_CORRUPTIONS: dict[str, tuple[str, ...]] = {
    "xray": ("gaussian_noise", "speckle_noise", "impulse_noise", "gaussian_blur", "motion_blur", "pixelate",
             "jpeg", "brightness_up", "brightness_down", "contrast_up", "contrast_down", "gamma_up", "gamma_down"),
    "fundus": ("gaussian_noise", "speckle_noise", "impulse_noise", "gaussian_blur", "motion_blur", "pixelate",
               "jpeg", "brightness_down", "contrast_down", "gamma_up", "gamma_down"),
}


def _channels_first(x: np.ndarray) -> tuple[torch.Tensor, bool]:
    colour = x.ndim == 3
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0) if colour else x[None])).float()
    return t, colour


def _back(t: torch.Tensor | np.ndarray, colour: bool) -> np.ndarray:
    a = t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    a = np.asarray(a, dtype=np.float32)
    return np.moveaxis(a, 0, -1) if colour else a[0]


def _gaussian_noise(x, level, rng):
    return x + rng.normal(0.0, level, x.shape)


def _speckle_noise(x, level, rng):
    return x + x * rng.normal(0.0, level, x.shape)


def _impulse_noise(x, level, rng):
    out = x.copy()
    hit = rng.random(x.shape[:2]) < level
    out[hit] = rng.integers(0, 2, int(hit.sum()))[:, None] if x.ndim == 3 else rng.integers(0, 2, int(hit.sum()))
    return out


def _gaussian_blur(x, level, rng):
    t, colour = _channels_first(x)
    return _back(GaussianSmooth(sigma=(level, level))(t), colour)


def _motion_blur(x, level, rng):
    from scipy.ndimage import convolve

    n = int(level)
    angle = rng.uniform(0, np.pi)
    kernel = np.zeros((2 * n + 1, 2 * n + 1), np.float32)
    for s in np.linspace(-n, n, 4 * n + 1):
        kernel[int(round(n + s * np.sin(angle))), int(round(n + s * np.cos(angle)))] = 1.0
    kernel /= kernel.sum()
    if x.ndim == 3:
        return np.stack([convolve(x[..., c], kernel, mode="nearest") for c in range(x.shape[-1])], -1)
    return convolve(x, kernel, mode="nearest")


def _pixelate(x, level, rng):
    t, colour = _channels_first(x)
    h, w = t.shape[1:]
    small = Resize((max(1, int(h * level)), max(1, int(w * level))), mode="area")(t)
    return _back(Resize((h, w), mode="nearest")(small), colour)


def _jpeg(x, level, rng):
    from PIL import Image

    u8 = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(level))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0


def _brightness(sign: float):
    def f(x, level, rng):
        t, colour = _channels_first(x)
        return _back(ShiftIntensity(sign * level)(t), colour)
    return f


def _contrast(x, level, rng):
    mean = x.mean()
    return (x - mean) * level + mean


def _gamma(x, level, rng):
    t, colour = _channels_first(x)
    # MONAI's AdjustContrast is gamma correction over the image's own [min, max]
    return _back(AdjustContrast(gamma=level)(t), colour)


_FUNCS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise, "speckle_noise": _speckle_noise, "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur, "motion_blur": _motion_blur, "pixelate": _pixelate, "jpeg": _jpeg,
    "brightness_up": _brightness(1.0), "brightness_down": _brightness(-1.0), "contrast_up": _contrast,
    "contrast_down": _contrast, "gamma_up": _gamma, "gamma_down": _gamma,
}

#: Every corruption name.
CORRUPTIONS: tuple[str, ...] = tuple(LEVELS)


def corrupt(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``image`` (``[0, 1]``, ``(H, W)`` or ``(H, W, 3)``) with corruption ``name`` at ``severity``
    (1-5), clipped to ``[0, 1]``; the same seed gives the same result."""
    if name not in _FUNCS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1 to 5, got {severity}")
    x = np.asarray(image, dtype=np.float32)
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] != 3):
        raise ValueError(f"corrupt: need an (H, W) or (H, W, 3) image, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    out = _FUNCS[name](x, LEVELS[name][severity - 1], rng)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def corrupt_uint8(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """:func:`corrupt` for 8-bit images (MedMNIST, PNG): ``uint8`` in, ``uint8`` out."""
    out = corrupt(np.asarray(image, dtype=np.float32) / 255.0, name, severity, seed)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
