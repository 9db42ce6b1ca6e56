"""No third-party exception escapes a reader: pydicom, nibabel, PIL, zipfile, the pylibjpeg decoders.

Damaged headers make pydicom raise ``NotImplementedError``, ``KeyError``, ``struct.error``...;
rust decoders raise ``pyo3_runtime.PanicException`` (a ``BaseException``). :func:`guarded`
turns every one of them into a :class:`~medtl.errors.CorruptFileError` naming the file, so
callers (``medtl info``, ``predict``, ``score``, the app) only ever see medtl's one-line errors.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from medtl.errors import CorruptFileError, MedtlError, one_line

F = TypeVar("F", bound=Callable[..., Any])

#: Never converted: the user or the interpreter stopping the program.
FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)


def _name(path: Any) -> str | None:
    if isinstance(path, (str, os.PathLike)):
        return str(path)
    if isinstance(path, Sequence) and path and not isinstance(path, (bytes, bytearray)):
        from medtl.io.dicom.sources import source_name

        try:
            return source_name(path)
        except Exception:  # noqa: BLE001 - only for the message
            return str(path[0])
    return None


def as_scan_error(exc: BaseException, path: Any) -> MedtlError:
    """The medtl error to raise for ``exc`` escaping a reader of ``path`` (``exc`` itself if medtl's)."""
    if isinstance(exc, MedtlError):
        return exc
    name = _name(path)
    if isinstance(exc, MemoryError):
        return CorruptFileError(name, "ran out of memory reading it (a damaged header or a scan too large for "
                                "this machine)", "lower MEDTL_MAX_BYTES / MEDTL_MAX_VOXELS or use a larger machine")
    if isinstance(exc, RecursionError):
        return CorruptFileError(name, "unreadable: nesting too deep (a damaged or crafted header)",
                                "re-export the file")
    return CorruptFileError(name, f"unreadable ({one_line(exc, 200)})",
                            "the file is damaged or of a kind medtl cannot read; re-export it")


def guarded(fn: F) -> F:
    """Decorator: exceptions other than medtl's (and Ctrl-C/exit) become a ScanError naming ``args[0]``."""

    @functools.wraps(fn)
    def wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(path, *args, **kwargs)
        except MedtlError:
            raise
        except BaseException as exc:  # noqa: BLE001 - pyo3 panics derive from BaseException
            if isinstance(exc, FATAL):
                raise
            raise as_scan_error(exc, path) from exc

    return wrapper  # type: ignore[return-value]
