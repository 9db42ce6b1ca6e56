"""Intensity windowing: map stored values (HU, raw MR, 8/16-bit pixels) to ``[0, 1]``.

Window specs (``PreprocessConfig.window``):

- ``"auto"``: the file's own window (DICOM WindowCenter/Width, kept in scan
  metadata) when present; else ``/255`` for 8-bit data; else for CT a wide
  window of -1000..1000 HU (air to dense bone, so no tissue is clipped away
  without a reason); else percentile scaling.
- ``"none"``: values unchanged (not in ``[0, 1]``).
- ``"percentile"``: the configured percentiles map to 0 and 1 (clipped).
- a CT preset name from :data:`CT_WINDOWS` (``"lung"``, ``"soft_tissue"``, ...).
- ``"C/W"`` numbers, e.g. ``"40/400"``: center 40, width 400.

A window ``(center, width)`` maps ``center - width/2`` to 0 and
``center + width/2`` to 1, clipped (the usual deep-learning form of the DICOM
linear VOI LUT, which differs from it by half a grey level).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.transforms.utils_pytorch_numpy_unification import percentile

from medtl.errors import ConfigError

#: CT window presets as ``(center, width)`` in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (480.0, 2500.0),
    "brain": (40.0, 80.0),
    "liver": (90.0, 150.0),
    "mediastinum": (50.0, 350.0),
}

#: ``auto`` window for CT without a window in the file: -1000..1000 HU.
CT_WIDE_WINDOW: tuple[float, float] = (0.0, 2000.0)
#: ``auto``'s window for 8-bit data: 0..255 to [0, 1].
BYTE_WINDOW: tuple[float, float] = (127.5, 255.0)

WINDOW_MODES = ("auto", "none", "percentile")


def window(x: Any, center: float, width: float) -> Any:
    """Map ``[center - width/2, center + width/2]`` linearly to ``[0, 1]`` and clip.

    Works on numpy arrays and torch tensors (MONAI ``ScaleIntensityRange``).
    """
    if width <= 0:
        raise ConfigError(f"window width {width} is not positive (preprocess.window: center/width, e.g. 40/400)")
    lo = center - width / 2.0
    return ScaleIntensityRange(a_min=lo, a_max=lo + width, b_min=0.0, b_max=1.0, clip=True)(x)


def window_to_unit(image: Any, window: tuple[float, float] | None = None,
                   percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Pure numpy display windowing: float32 ``[0, 1]``, ``window`` = ``(center, width)``.

    ``None``: the ``percentiles`` of the finite values map to 0 and 1. NaN counts as
    the window's low end. The one windowing rule of the overlays and the app's viewer.
    """
    img = np.asarray(image, dtype=np.float64)
    if window is None:
        finite = img[np.isfinite(img)]
        lo, hi = _percentile_range(finite, percentiles) if finite.size else (0.0, 1.0)
    else:
        center, width = float(window[0]), float(window[1])
        if width <= 0:
            raise ValueError(f"window width must be > 0, got {width}")
        lo, hi = center - width / 2, center + width / 2
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.float32)
    return np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def parse_window(spec: str) -> str | tuple[float, float]:
    """Validate a window spec: returns ``"auto"``/``"none"``/``"percentile"`` or ``(center, width)``.

    Raises :class:`~medtl.errors.ConfigError` for anything else.
    """
    spec = str(spec).strip()
    if spec.lower() in WINDOW_MODES:
        return spec.lower()
    if spec.lower() in CT_WINDOWS:
        return CT_WINDOWS[spec.lower()]
    center, sep, width = spec.partition("/")
    try:
        if not sep:
            raise ValueError
        c, w = float(center), float(width)
    except ValueError:
        raise ConfigError(
            f"window {spec!r} is not understood (use auto, none, percentile, one of "
            f"{', '.join(CT_WINDOWS)}, or center/width numbers like 40/400)") from None
    if w <= 0:
        raise ConfigError(f"window {spec!r}: width must be positive")
    return c, w


def resolve_window(spec: str, file_window: Sequence[float] | None = None, modality: str = "OT",
                   dtype: str | None = None) -> str | tuple[float, float]:
    """The window one scan gets: ``"none"``, ``"percentile"`` or ``(center, width)`` (see module doc)."""
    mode = parse_window(spec)
    if mode != "auto":
        return mode
    if file_window is not None:
        c, w = float(file_window[0]), float(file_window[1])
        if w > 0:
            return c, w
    if dtype == "uint8":
        return BYTE_WINDOW
    if str(modality).upper() == "CT":
        return CT_WIDE_WINDOW
    return "percentile"


def scale_intensity(x: Any, spec: str = "auto", percentiles: Sequence[float] = (0.5, 99.5),
                    file_window: Sequence[float] | None = None, modality: str = "OT",
                    dtype: str | None = None) -> Any:
    """Apply window ``spec`` to ``x`` (channel-first array or tensor); output in ``[0, 1]`` unless ``"none"``.

    Percentiles are taken over all channels together so that colour balance is kept.
    """
    mode = resolve_window(spec, file_window, modality, dtype)
    if mode == "none":
        return x
    if mode == "percentile":
        lo, hi = _percentile_range(x, percentiles)
        if hi <= lo:  # blank image: MONAI would warn of a division by zero and return zeros
            return x * 0.0 if isinstance(x, torch.Tensor) else np.zeros_like(x, dtype=np.float32)
        return ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(x)
    return window(x, *mode)


def _percentile_range(x: Any, percentiles: Sequence[float]) -> tuple[float, float]:
    """The values the ``percentiles`` map to 0 and 1; min and max when the two percentiles coincide.

    A mostly blank image (a small object on over 99 % background) has equal 0.5 and 99.5
    percentiles: MONAI's ``ScaleIntensityRangePercentiles`` then only subtracts, leaving the raw
    values (e.g. 0..500) in what should be ``[0, 1]``.
    """
    if (x.numel() if isinstance(x, torch.Tensor) else np.size(x)) == 0:
        return 0.0, 0.0
    lo, hi = (float(v) for v in percentile(x, [float(percentiles[0]), float(percentiles[1])]))
    if hi <= lo:
        lo, hi = float(x.min()), float(x.max())
    return lo, hi


class WindowIntensity(Transform):
    """Array transform form of :func:`scale_intensity`.

    With a :class:`~monai.data.MetaTensor` input the per-scan facts (file window,
    modality, original dtype) are read from its meta as written by
    :class:`~medtl.transforms.LoadScand`.
    """

    def __init__(self, spec: str = "auto", percentiles: Sequence[float] = (0.5, 99.5)) -> None:
        parse_window(spec)
        self.spec = spec
        self.percentiles = tuple(float(p) for p in percentiles)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        meta = img.meta if isinstance(img, MetaTensor) else {}
        return scale_intensity(img, self.spec, self.percentiles, file_window=meta.get("window"),
                               modality=meta.get("modality", "OT"), dtype=meta.get("source_dtype"))


class WindowIntensityd(MapTransform):
    """Dictionary wrapper of :class:`WindowIntensity`."""

    def __init__(self, keys: KeysCollection, spec: str = "auto", percentiles: Sequence[float] = (0.5, 99.5),
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = WindowIntensity(spec, percentiles)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d
