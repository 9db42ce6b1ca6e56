"""The ``data:`` section of an experiment config: where the cohort is and how it is split."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from medtl._schema import Section as _Section


class DataConfig(_Section):
    """Where the cohort is and how it is split."""

    config_key: ClassVar[str] = "data"

    path: str = Field("", description="The cohort: a manifest CSV (path,label[,split][,patient_id]), a folder "
                      "with one subfolder per class, or a MedMNIST .npz.")
    format: Literal["auto", "manifest", "folder", "medmnist"] = Field(
        "auto", description="How to read data.path; auto tells by what it is (a .csv, a folder, a .npz).")
    val_fraction: float = Field(0.15, ge=0, lt=1, description="Share of the cohort put in the validation split "
                                "when the data has no split of its own (stratified, grouped by patient).")
    test_fraction: float = Field(0.15, ge=0, lt=1, description="Share of the cohort put in the test split when "
                                 "the data has no split of its own.")
    train_fraction: float = Field(1.0, gt=0, le=1, description="Keep a stratified, seeded subsample of the "
                                  "training split (e.g. 0.1), for learning curves.")
    train_size: Optional[int] = Field(None, ge=1, description="Or keep a stratified subsample of this many "
                                      "training images; null: all.")
    max_per_class: Optional[int] = Field(None, ge=1, description="Then keep at most this many training images "
                                         "per class; null: no cap.")
    seed: Optional[int] = Field(None, description="Seeds the split and the subsample; null: train.seed. Fixing "
                                "it keeps one cohort while training seeds vary, which separates the cohort's share "
                                "of a spread from training noise.")
    class_names: Optional[list[str]] = Field(None, description="Class names in label order (integer labels "
                                             "0..K-1 are named by them); null: from the data.")
    cache: Literal["memory", "disk", "none"] = Field("memory", description="Where decoded, preprocessed images "
                                                     "are kept between epochs: memory, disk (data.cache_dir) or "
                                                     "none.")
    cache_dir: Optional[str] = Field(None, description="Folder of the cache when data.cache is disk (made readable "
                                                     "by its user only when medtl creates it).")
    num_workers: int = Field(-1, ge=-1, description="Data loader worker processes, each drawing its own "
                             "augmentation; -1: auto (none on a CPU of up to 4 cores, 2 above; up to 8 on a GPU).")
    filter: dict[str, str] = Field(default_factory=dict, description="Keep only manifest rows whose column equals "
                                   "the value, e.g. {site: A}.")
    modality: Optional[str] = Field(None, description="DICOM modality of images whose files carry none (PNG "
                                    "folders, MedMNIST .npz), e.g. DX; recorded in the model card's training "
                                    "domain so that prediction can refuse other modalities.")
    body_part: Optional[str] = Field(None, description="Body part, e.g. CHEST; recorded in the model card "
                                     "(informative).")

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> "DataConfig":
        """Refused here, not minutes later by the split as an internal error."""
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"data.val_fraction ({self.val_fraction:g}) and data.test_fraction "
                             f"({self.test_fraction:g}) leave no training data: their sum must be below 1")
        if self.cache == "disk" and not self.cache_dir:
            raise ValueError("data.cache is disk but data.cache_dir is not set: name the cache's folder "
                             "(data.cache_dir=DIR) or keep the cache in memory (data.cache=memory)")
        return self

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
