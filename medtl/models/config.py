"""The ``model:`` section: which backbone, which weights, how it is adapted."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field

from medtl._schema import Section as _Section


class ModelConfig(_Section):
    """The backbone, its starting weights and how they are adapted to the input (channels, 3D)."""

    config_key: ClassVar[str] = "model"

    arch: str = Field("resnet18", description="Backbone: resnet18, resnet34, resnet50, densenet121 or "
                      "efficientnet_lite0 (medtl.models.list_models()).")
    weights: Optional[str] = Field("imagenet", description="Starting weights: imagenet, a file (e.g. a run's "
                                   "model.safetensors, to fine-tune that model on a new cohort), or null (from "
                                   "scratch).")
    weights_dir: Optional[str] = Field(None, description="A folder searched first for weight files (then "
                                       "MEDTL_WEIGHTS_DIR, the cache, the medtl[weights] package).")
    inflate: str = Field("i3d", description="2D to 3D adaptation of the ImageNet weights (3D only): i3d, central, "
                         "acs or 2.5d.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability before the classification head; 0: "
                           "off.")
    drop_path: Optional[float] = Field(None, ge=0, lt=1, description="Stochastic depth: the last residual block's "
                                       "drop probability, earlier blocks linearly less (null: the architecture's "
                                       "own: efficientnet_lite0 0.2, as TF's EfficientNet; the ResNets and DenseNet "
                                       "have none).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra options of the 3D adaptation, e.g. "
                                   "{depth_padding: replicate} for i3d (3D only).")
