"""The one preprocessing pipeline: used for training, validation and prediction alike.

    prep = Preprocessing.from_config(cfg.preprocess)
    train_tf = prep.transforms(cfg.augment)   # MONAI Compose on {"image": ..., "label": ...}
    eval_tf = prep.transforms()
    x = prep("scan.dcm")                       # (C, H, W) tensor, exactly what eval_tf gives
    card["preprocessing"] = prep.to_dict()     # ... Preprocessing.from_dict(card["preprocessing"])

Order (deterministic first, so MONAI's ``CacheDataset`` caches everything up to
the first random transform): load -> [3D: Orientationd, Spacingd] -> window to
[0, 1] -> Resized -> network layout -> [random augmentation] -> channels (gray
repeated to 3 when the model takes RGB) -> normalisation -> float32 tensor.
Gray->RGB repetition comes after augmentation so the cache holds one channel and
noise is the same in the three copies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.utils import compute_shape_offset
from monai.transforms import EnsureTyped, MapTransform, NormalizeIntensityd, Orientationd, Resized, Spacingd
from pydantic import ValidationError, field_validator, model_validator

from medtl.transforms.config import AugmentConfig, PreprocessConfig
from medtl.errors import ConfigError
from medtl.io import limits
from medtl.io.limits import LimitError
from medtl.transforms.antialias import AntiAliasd
from medtl.transforms.augment import augmentations
from medtl.transforms.intensity import WindowIntensityd, parse_window
from medtl.transforms.layout import ToNetworkLayoutd
from medtl.transforms.load import LoadScand, ScanSource
from medtl.transforms.utility import EnsureChannelsd, ImageNetNormalized, MedtlCompose

#: Bumped when the meaning of the stored fields changes (model cards keep it).
PREPROCESSING_VERSION = 1


class Preprocessing(PreprocessConfig):
    """Serialisable preprocessing (a :class:`~medtl.transforms.config.PreprocessConfig` that can build its pipeline).

    ``size`` is in network layout (``[H, W]`` or ``[D, H, W]``; one number is
    used for every axis; empty keeps the scan's size, for pipelines that do not
    batch). ``orientation`` and ``spacing`` apply to volumes only: 2D pictures and
    radiographs stay as displayed (reorienting an X-ray to RAS would mirror it).
    Data keys are ``"image"`` (path, :class:`~medtl.io.Scan` or array) and any
    others (``"label"``...), passed through untouched. A 2D model given a volume,
    or a 3D model given one image, raises a :class:`~medtl.errors.ScanError`
    naming the file.
    """

    version: int = PREPROCESSING_VERSION

    @classmethod
    def _config_error(cls, exc: ValidationError) -> ConfigError:
        """A bad setting, at construction, assignment or ``model_validate``: medtl's one line (the section's,
        as :class:`~medtl._schema.Section` reports it), naming the accepted settings for an unknown key."""
        return _config_error(exc)

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: str) -> str:
        parse_window(v)
        return v

    @model_validator(mode="after")
    def _check(self) -> "Preprocessing":
        if self.channels not in (1, 3):
            raise ConfigError(f"preprocess.channels={self.channels}: only 1 (gray) or 3 (RGB) is implemented "
                              "(2.5D slice stacks are not yet)")
        if len(self.size) not in (0, 1, self.spatial_dims):
            raise ConfigError(f"preprocess.size={self.size} does not fit spatial_dims={self.spatial_dims}: give one "
                              f"size, or {self.spatial_dims} ({'[D, H, W]' if self.spatial_dims == 3 else '[H, W]'})")
        if any(s < 1 for s in self.size):
            raise ConfigError(f"preprocess.size={self.size}: sizes must be positive (pixels), or [] to keep the scan's")
        voxels = math.prod(self.network_size) * self.channels
        if voxels > limits.current().max_voxels:  # the resize would allocate it for every image, then fail
            raise ConfigError(f"preprocess.size={self.size}: {voxels:,} input values per image, over the limit of "
                              f"{limits.current().max_voxels:,} (MEDTL_MAX_VOXELS); give a smaller size")
        if self.spacing is not None and len(self.spacing) not in (1, 3):
            raise ConfigError(f"preprocess.spacing={self.spacing} must give 1 or 3 values (mm along i, j, k)")
        if self.spacing is not None and not all(0 < s < math.inf for s in self.spacing):
            raise ConfigError(f"preprocess.spacing={self.spacing}: spacings are millimetres above 0")
        pairs = ("LR", "PA", "IS")  # one letter of each, as nibabel's and MONAI's axis codes
        if self.orientation is not None and sorted(
                next((i for i, pair in enumerate(pairs) if c in pair), -1) for c in self.orientation) != [0, 1, 2]:
            raise ConfigError(f"preprocess.orientation={self.orientation!r}: give three axis codes, one of each of "
                              "L/R, P/A, I/S (e.g. RAS or LPS), or null to keep the voxel order")
        if self.version > PREPROCESSING_VERSION:
            raise ConfigError(f"preprocessing version {self.version} is newer than this medtl "
                              f"({PREPROCESSING_VERSION}); upgrade medtl")
        return self

    @classmethod
    def _validate(cls, data: dict[str, Any]) -> "Preprocessing":
        return cls(**data)  # __init__ turns pydantic's report into a ConfigError

    @classmethod
    def from_config(cls, cfg: PreprocessConfig) -> "Preprocessing":
        """From the experiment config's ``preprocess`` section."""
        return cls._validate(cfg.model_dump())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (stored in the model card under ``"preprocessing"``)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        """Inverse of :meth:`to_dict`."""
        return cls._validate(dict(data))

    def fingerprint(self) -> str:
        """Short hash of the settings (e.g. a disk-cache folder name that changes with them)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def network_size(self) -> list[int]:
        """``size`` expanded to one entry per spatial axis (network layout), ``[]`` to keep sizes."""
        if len(self.size) == 1:
            return [int(self.size[0])] * self.spatial_dims
        return [int(s) for s in self.size]

    def deterministic(self, keys: Sequence[str] = ("image",)) -> list:
        """The deterministic transforms, load to network layout as a plain tensor (cached by ``CacheDataset``)."""
        keys = list(keys)
        dims = self.spatial_dims
        interp = "bilinear" if dims == 2 else "trilinear"
        out: list = [LoadScand(keys, spatial_dims=dims, grayscale=self.channels == 1)]
        if dims == 3 and self.orientation:
            out.append(Orientationd(keys, axcodes=self.orientation, labels=None))
        if dims == 3 and self.spacing:
            pixdim = list(self.spacing) * (3 if len(self.spacing) == 1 else 1)
            out.append(ResampleBudgetd(keys, pixdim=pixdim))
            out.append(Spacingd(keys, pixdim=pixdim, mode="bilinear"))
        out.append(WindowIntensityd(keys, spec=self.window, percentiles=self.percentiles))
        size = self.network_size
        if size:
            out.append(AntiAliasd(keys, spatial_size=size[::-1]))  # Resized's own filter unfolds the volume
            out.append(Resized(keys, spatial_size=size[::-1], mode=interp, anti_aliasing=False))
        out.append(ToNetworkLayoutd(keys, spatial_dims=dims))
        # Plain tensors from here on: the cache is smaller and cheap to copy each epoch, and MedtlCompose runs the
        # rest without MetaTensor bookkeeping (plain_from); nothing later needs the meta.
        out.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
        return out

    def finishing(self, keys: Sequence[str] = ("image",)) -> list:
        """Channel count, normalisation and conversion to a plain float32 tensor."""
        keys = list(keys)
        out: list = [EnsureChannelsd(keys, channels=self.channels)]
        if self.normalize == "imagenet":
            out.append(ImageNetNormalized(keys))
        elif self.normalize == "zscore":
            out.append(NormalizeIntensityd(keys, channel_wise=True))
        out.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
        return out

    def transforms(self, augment: AugmentConfig | None = None, modality: str | None = None,
                   keys: Sequence[str] = ("image",)) -> MedtlCompose:
        """The pipeline on data dicts; with ``augment`` the random transforms sit between the two halves.

        ``modality`` (e.g. ``"MR"``) selects modality-specific domain-shift
        transforms. The result supports ``set_random_state(seed)``.
        """
        steps = self.deterministic(keys)
        plain_from = len(steps)
        if augment is not None:
            steps += augmentations(augment, self.spatial_dims, modality=modality, size=self.network_size or None,
                                   clip=self.window != "none", keys=keys)
        steps += self.finishing(keys)
        return MedtlCompose(steps, plain_from=plain_from, log_stats=False)

    def __call__(self, x: ScanSource) -> torch.Tensor:
        """Path | Scan | array -> network input ``(C, ...)``: the evaluation pipeline, no augmentation."""
        return _eval_pipeline(json.dumps(self.to_dict(), sort_keys=True))({"image": x})["image"]


class ResampleBudgetd(MapTransform):
    """Refuse, before ``Spacingd`` allocates it, a resampled grid over ``MEDTL_MAX_VOXELS``.

    The readers bound the voxels a file holds, not the ones resampling makes: a 92-byte NIfTI of
    16 x 16 x 2 voxels claiming 5000 mm slices becomes 1.3 million voxels at 1 mm (a 512 x 512 one,
    5 GB). The count is MONAI's own ``compute_shape_offset`` on the image's affine.
    """

    def __init__(self, keys: KeysCollection, pixdim: Sequence[float]) -> None:
        super().__init__(keys)
        self.pixdim = [float(p) for p in pixdim]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            affine = np.asarray(img.affine, dtype=np.float64)
            spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
            target = affine.copy()
            target[:3, :3] = affine[:3, :3] / spacing * np.asarray(self.pixdim)
            shape, _ = compute_shape_offset(list(img.shape[1:]), affine, target)
            voxels = int(np.prod([int(s) for s in shape], dtype=np.float64)) * int(img.shape[0])
            limit = limits.current().max_voxels
            if voxels > limit:
                raise LimitError(img.meta.get("filename_or_obj") or None,
                                 f"resampling its {'x'.join(f'{v:g}' for v in spacing)} mm voxels to "
                                 f"{'x'.join(f'{v:g}' for v in self.pixdim)} mm would make {voxels:,} voxels, over "
                                 f"the limit of {limit:,} (MEDTL_MAX_VOXELS)",
                                 "check the file's voxel size, or set a coarser preprocess.spacing")
        return d


def _config_error(exc: ValidationError) -> ConfigError:
    """pydantic's multi-line report -> one line naming the first bad ``preprocess.`` key (the fix is in
    medtl's own messages; pydantic's name the accepted values)."""
    first = exc.errors()[0]
    where = ".".join(str(x) for x in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = f"not a preprocessing setting; use one of {', '.join(Preprocessing.model_fields)}"
    return ConfigError(f"preprocessing preprocess.{where}: {msg}" if where else f"preprocessing: {msg}")


@functools.lru_cache(maxsize=8)
def _eval_pipeline(settings: str) -> MedtlCompose:
    """The evaluation Compose of some settings, built once (kept off the model so equality and
    assignment stay plain pydantic)."""
    return Preprocessing.model_validate(json.loads(settings)).transforms()
