"""The ``model:`` section: which backbone, which weights, how it is adapted."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field

from medtl._schema import Section as _Section


class ModelConfig(_Section):
    """The backbone, its starting weights and how they are adapted to the input (channels, 3D)."""

    config_key: ClassVar[str] = "model"

    arch: str = "resnet18"
    weights: Optional[str] = "imagenet"  #: "imagenet", a file path, or null (scratch)
    weights_dir: Optional[str] = None
    inflate: str = "i3d"  #: 2D->3D adaptation (3D only): i3d | central | acs | 2.5d
    dropout: float = Field(0.0, ge=0, lt=1)
    #: stochastic depth: the last residual block's drop probability, earlier blocks linearly less (null:
    #: the architecture's own: efficientnet_lite0 0.2, as TF's EfficientNet; the ResNets and DenseNet have none)
    drop_path: Optional[float] = Field(None, ge=0, lt=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)  #: extra args for the builder
