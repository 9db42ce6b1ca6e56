"""The ``data:`` section of an experiment config: where the cohort is and how it is split."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator

from medtl._schema import Section as _Section


class DataConfig(_Section):
    """Where the cohort is and how it is split."""

    config_key: ClassVar[str] = "data"

    path: str = ""  #: manifest CSV, folder-per-class tree, or MedMNIST .npz
    format: Literal["auto", "manifest", "folder", "medmnist"] = "auto"
    val_fraction: float = Field(0.15, ge=0, lt=1)  #: used when the data has no split
    test_fraction: float = Field(0.15, ge=0, lt=1)
    train_fraction: float = Field(1.0, gt=0, le=1)  #: stratified subsample of train (e.g. 0.1)
    train_size: Optional[int] = Field(None, ge=1)  #: or a stratified subsample of this many training images
    max_per_class: Optional[int] = Field(None, ge=1)  #: then at most this many training images per class
    #: seeds the split and the subsample; default (None): train.seed. Fixing it keeps one cohort while
    #: training seeds vary, which separates the cohort's share of a spread from training noise
    seed: Optional[int] = None
    class_names: Optional[list[str]] = None  #: default: from the data
    cache: Literal["memory", "disk", "none"] = "memory"  #: decoded+preprocessed tensors
    cache_dir: Optional[str] = None
    num_workers: int = Field(-1, ge=-1)  #: -1 = auto
    filter: dict[str, str] = Field(default_factory=dict)  #: manifest column -> value (e.g. site: A)
    #: DICOM modality of images whose files carry none (PNG folders, MedMNIST .npz), e.g. DX; recorded
    #: in the model card's training domain so that prediction can refuse other modalities
    modality: Optional[str] = None
    body_part: Optional[str] = None  #: e.g. CHEST; recorded in the model card (informative)

    @field_validator("class_names", "filter", mode="before")
    @classmethod
    def _as_text(cls, v: Any) -> Any:
        """A manifest's cells are text: ``filter: {site: 1}`` or ``class_names: [0, 1]`` (YAML reads numbers)
        mean the text ``"1"`` and ``["0", "1"]``."""
        def text(x: Any) -> Any:
            if isinstance(x, bool):
                return str(x).lower()
            return str(x) if isinstance(x, (int, float)) else x
        if isinstance(v, dict):
            return {k: text(x) for k, x in v.items()}
        if isinstance(v, list):
            return [text(x) for x in v]
        return v
