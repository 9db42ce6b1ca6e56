"""The ``preprocess:`` and ``augment:`` sections: what the network sees, at training and prediction alike."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field

from medtl._schema import Section as _Section


class PreprocessConfig(_Section):
    """Deterministic preprocessing; it is saved in the model card and reused at prediction."""

    config_key: ClassVar[str] = "preprocess"

    spatial_dims: Literal[2, 3] = 2
    size: list[int] = Field(default_factory=lambda: [224, 224])  #: model input size
    orientation: Optional[str] = "RAS"  #: reorient volumes (None keeps voxel order)
    spacing: Optional[list[float]] = None  #: resample to this spacing (mm) before resizing
    window: str = "auto"  #: auto | none | percentile | a CT preset (lung, soft_tissue, ...) | "C/W"
    percentiles: tuple[float, float] = (0.5, 99.5)
    #: channels fed to the network (1 gray, 3 RGB); auto: 3 when the training images are colour, else 1
    channels: Union[int, Literal["auto"]] = 1
    normalize: Literal["imagenet", "zscore", "none"] = "imagenet"


class AugmentConfig(_Section):
    """Training-time augmentation: spatial + a domain-shift preset imitating another site."""

    config_key: ClassVar[str] = "augment"

    flip: bool = True
    flip_axes: Optional[list[int]] = None  #: default: left-right only
    rotate_deg: float = 0.0
    zoom: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0  #: fraction of the size
    elastic: bool = False
    domain_shift: Literal["none", "mild", "strong"] = "none"
