"""The ``preprocess:`` and ``augment:`` sections: what the network sees, at training and prediction alike."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import Field, model_validator

from medtl._schema import Section as _Section


#: A percentile: 150 failed inside the first training batch as an internal error
_Percentile = Annotated[float, Field(ge=0, le=100)]


class PreprocessConfig(_Section):
    """Deterministic preprocessing; it is saved in the model card and reused at prediction."""

    config_key: ClassVar[str] = "preprocess"

    spatial_dims: Literal[2, 3] = Field(2, description="2 for images and single slices, 3 for volumes.")
    size: list[int] = Field(default_factory=lambda: [224, 224], description="Network input size in pixels, "
                            "[H, W] or [D, H, W] ([n]: n along every axis); every scan is resized to it.")
    orientation: Optional[str] = Field("RAS", description="Axis codes volumes are reoriented to before resizing; "
                                       "null keeps the voxel order. 2D images stay as displayed.")
    spacing: Optional[list[float]] = Field(None, description="Resample volumes to this voxel spacing (mm) before "
                                           "resizing; null: no resampling.")
    window: str = Field("auto", description="Intensity window to [0, 1]: auto (the file's own window, /255 for "
                        "8-bit, -1000..1000 HU for CT, else percentiles), none, percentile, a CT preset (soft_tissue, "
                        "lung, bone, brain, liver, mediastinum) or center/width numbers such as 40/400.")
    percentiles: tuple[_Percentile, _Percentile] = Field((0.5, 99.5), description="Low and high percentiles "
                                                         "mapped to 0 and 1 by the percentile window.")
    channels: Union[int, Literal["auto"]] = Field(1, description="Channels fed to the network (1 gray, 3 RGB); "
                                                  "auto: 3 when the training images are colour, else 1.")
    normalize: Literal["imagenet", "zscore", "none"] = Field(
        "imagenet", description="After windowing: imagenet (the pretrained weights' mean and std), zscore (each "
        "image to mean 0, std 1 per channel) or none.")

    @model_validator(mode="after")
    def _percentiles_in_order(self) -> "PreprocessConfig":
        """[99, 1] inverted every image without a word."""
        low, high = self.percentiles
        if low > high:
            raise ValueError(f"preprocess.percentiles [{low:g}, {high:g}]: the low percentile comes first "
                             f"(e.g. [{high:g}, {low:g}])")
        return self


#: A zoom factor: a negative one failed inside MONAI's RandZoomd at the first training batch
_Factor = Annotated[float, Field(gt=0)]


class AugmentConfig(_Section):
    """Training-time augmentation: spatial + a domain-shift preset imitating another site."""

    config_key: ClassVar[str] = "augment"

    flip: bool = Field(True, description="Random flips (each axis of augment.flip_axes with probability 0.5); "
                       "off for anatomy that is not left-right symmetric (a chest).")
    flip_axes: Optional[list[int]] = Field(None, description="Network-layout axes flipped ([H, W] or [D, H, W], 0 "
                                           "first); null: left-right only, the last axis.")
    rotate_deg: float = Field(0.0, description="Random rotation of up to this many degrees either way (in 3D "
                              "in-plane, about the depth axis); 0: none.")
    zoom: tuple[_Factor, _Factor] = Field((1.0, 1.0), description="Random isotropic zoom between these factors, e.g. "
                                      "[0.9, 1.1]; [1, 1]: none.")
    shift: float = Field(0.0, ge=0, lt=1, description="Random shift of up to this fraction of the size along each axis; 0: "
                         "none.")
    elastic: bool = Field(False, description="Random elastic deformation (in 30 % of the images).")
    domain_shift: Literal["none", "mild", "strong"] = Field(
        "none", description="Preset imitating another scanner or site (bias field, gamma, noise, blur, lower "
        "resolution, ...; medtl/transforms/augment.py); strong when the model will meet other sites.")
