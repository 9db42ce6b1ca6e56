"""One typed experiment config, loaded from YAML and overridable from the command line.

    cfg = load_config("configs/pneumoniamnist_effnet_lite0.yaml", ["train.epochs=5", "data.path=x.npz"])

Every field has a sensible default, so a config file only says what differs.
Unknown keys are errors (a typo must not be silently ignored).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medtl.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the cohort is and how it is split."""

    path: str = ""  #: manifest CSV, folder-per-class tree, or MedMNIST .npz
    format: Literal["auto", "manifest", "folder", "medmnist"] = "auto"
    val_fraction: float = Field(0.15, ge=0, lt=1)  #: used when the data has no split
    test_fraction: float = Field(0.15, ge=0, lt=1)
    train_fraction: float = Field(1.0, gt=0, le=1)  #: stratified subsample of train (e.g. 0.1)
    class_names: Optional[list[str]] = None  #: default: from the data
    cache: Literal["memory", "disk", "none"] = "memory"  #: decoded+preprocessed tensors
    cache_dir: Optional[str] = None
    num_workers: int = Field(-1, ge=-1)  #: -1 = auto
    filter: dict[str, str] = Field(default_factory=dict)  #: manifest column -> value (e.g. site: A)


class PreprocessConfig(_Section):
    """Deterministic preprocessing; it is saved in the model card and reused at prediction."""

    spatial_dims: Literal[2, 3] = 2
    size: list[int] = Field(default_factory=lambda: [224, 224])  #: model input size
    orientation: Optional[str] = "RAS"  #: reorient volumes (None keeps voxel order)
    spacing: Optional[list[float]] = None  #: resample to this spacing (mm) before resizing
    window: str = "auto"  #: auto | none | percentile | a CT preset (lung, soft_tissue, ...) | "C/W"
    percentiles: tuple[float, float] = (0.5, 99.5)
    channels: int = Field(1, ge=1)  #: channels fed to the network (1 gray, 3 RGB, 2.5D slices)
    normalize: Literal["imagenet", "zscore", "none"] = "imagenet"


class AugmentConfig(_Section):
    """Training-time augmentation: spatial + a domain-shift preset imitating another site."""

    flip: bool = True
    flip_axes: Optional[list[int]] = None  #: default: left-right only
    rotate_deg: float = 0.0
    zoom: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0  #: fraction of the size
    elastic: bool = False
    domain_shift: Literal["none", "mild", "strong"] = "none"


class ModelConfig(_Section):
    arch: str = "resnet18"
    weights: Optional[str] = "imagenet"  #: "imagenet", a file path, or null (scratch)
    weights_dir: Optional[str] = None
    inflate: str = "i3d"  #: 2D->3D adaptation (3D only): i3d | central | acs | 2.5d
    dropout: float = Field(0.0, ge=0, lt=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)  #: extra args for the builder


class TrainConfig(_Section):
    strategy: Literal["linear", "partial", "full", "gradual"] = "gradual"
    epochs: int = Field(10, ge=1)
    freeze_epochs: int = Field(1, ge=0)  #: gradual: epochs with only the head training
    unfreeze_stages: int = Field(2, ge=1)  #: partial: how many last stages train
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_decay: float = Field(0.3, gt=0, le=1)  #: discriminative lr: each earlier stage x this
    weight_decay: float = Field(0.01, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = Field(0.1, ge=0, lt=1)  #: fraction of steps
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    balance: Literal["none", "loss", "sampler"] = "none"
    #: train: update statistics; freeze: keep ImageNet's; reestimate: recompute them on the
    #: training data before the first epoch (AdaBN), then train
    batchnorm: Literal["train", "freeze", "reestimate"] = "train"
    monitor: str = "auc"  #: validation metric for best checkpoint / early stopping
    patience: int = Field(0, ge=0)  #: early stopping (0 = off)
    device: str = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    compile: bool = False
    threads: int = Field(0, ge=0)  #: CPU threads (0 = all cores)
    seed: int = 0
    deterministic: bool = False


class EvalConfig(_Section):
    threshold: Union[float, Literal["youden", "val_youden"]] = "val_youden"
    bootstrap: int = Field(1000, ge=0)  #: resamples for 95% CIs


class Config(_Section):
    """A whole experiment."""

    name: str = "experiment"
    task: Literal["classification"] = "classification"
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | os.PathLike) -> None:
        from medtl._fileutil import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.epochs=5)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``a.b=value`` items on a nested dict (values parsed as YAML: 5, 1e-3, [64,64], null)."""
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return data


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or start from defaults), apply ``key=value`` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (see configs/ for examples)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a config must be a mapping of sections")
    apply_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        src = f"{path}: " if path else ""
        raise ConfigError(f"{src}{where}: {first['msg']} ({exc.error_count()} problem(s); fix the config or override)") from None
