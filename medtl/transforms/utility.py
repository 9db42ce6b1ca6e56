"""Small transforms MONAI lacks: channel count, ImageNet normalisation, error unwrapping Compose."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
import threading as _thread
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, MapTransform, RepeatChannel, Transform

from medtl.errors import ConfigError, MedtlError, ScanError


class EnsureChannels(Transform):
    """Give the network ``channels`` channels: 1-channel gray is repeated to 3 (MONAI ``RepeatChannel``).

    Colour -> 1 channel is done by luminance at loading (``LoadScan(grayscale=True)``);
    any other mismatch (e.g. 2.5D slice stacks) is an error here.
    """

    def __init__(self, channels: int) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"channels={channels!r} (preprocess.channels): use 1 (gray) or 3 (RGB); "
                              "other counts (2.5D slice stacks) are not implemented")
        self.channels = channels
        self.repeat = RepeatChannel(repeats=channels)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c = int(img.shape[0])
        if c == self.channels:
            return img
        if c == 1:
            return self.repeat(img)
        source = getattr(img, "meta", {}).get("filename_or_obj") or None
        raise ScanError(source, f"the image has {c} channels, the model takes {self.channels}",
                        "give a gray or RGB image")


class EnsureChannelsd(MapTransform):
    """Dictionary wrapper of :class:`EnsureChannels`."""

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = EnsureChannels(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class ImageNetNormalize(Transform):
    """One channel-first ``[0, 1]`` image -> ImageNet-normalised, via ``medtl.models.imagenet_normalize``.

    Kept as the models' own function (Keras' ``preprocess_input`` idea) so the
    statistics live next to the weights they belong to.
    """

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        from medtl.models import imagenet_normalize

        return imagenet_normalize(img[None])[0]


class ImageNetNormalized(MapTransform):
    """Dictionary wrapper of :class:`ImageNetNormalize`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ImageNetNormalize()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


def unwrap_error(exc: BaseException) -> BaseException:
    """The medtl error inside MONAI's ``RuntimeError("applying transform ...")`` chain, else ``exc``.

    MONAI wraps every failure of a transform; medtl's one-line errors (which
    name the file and the fix) are what users must see.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, MedtlError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return exc


class MedtlCompose(Compose):
    """MONAI ``Compose`` that re-raises medtl's own error (e.g. a ``ScanError``) instead of MONAI's wrapper.

    ``plain_from``: index of the first transform that needs no ``MetaTensor``
    (everything after the cached head, which ends with plain tensors). From
    there on, in a process's main thread (DataLoader worker processes, or the
    main process), MONAI's global ``track_meta`` is switched off while the
    transforms run, so the random transforms skip MetaTensor bookkeeping (4x
    faster on 64 px images, same numbers). In other threads it is left alone,
    because the flag is process-wide and a head running there needs the affine.

    Everything else (``start``/``end`` used by ``CacheDataset``,
    ``set_random_state``, ``flatten``) is MONAI's.
    """

    def __init__(self, transforms: Any = None, plain_from: int | None = None, **kwargs: Any) -> None:
        super().__init__(transforms, **kwargs)
        self.plain_from = plain_from

    def _run(self, input_: Any, start: int, end: int | None, threading: bool, lazy: bool | None) -> Any:
        return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)

    def __call__(self, input_: Any, start: int = 0, end: int | None = None, threading: bool = False,
                 lazy: bool | None = None) -> Any:
        try:
            split = self.plain_from
            stop = len(self.transforms) if end is None else end
            if split is None or stop <= split or _thread.current_thread() is not _thread.main_thread():
                return self._run(input_, start, end, threading, lazy)
            if start < split:
                input_ = self._run(input_, start, split, threading, lazy)
            previous = get_track_meta()
            set_track_meta(False)
            try:
                return self._run(input_, max(start, split), end, threading, lazy)
            finally:
                set_track_meta(previous)
        except RuntimeError as exc:
            inner = unwrap_error(exc)
            if inner is exc:
                raise
            raise inner from None
