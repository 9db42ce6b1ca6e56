"""medtl's exceptions: one-line messages that name the file and the fix.

Every error medtl raises on bad input derives from :class:`MedtlError`; the CLI
prints it without a traceback and exits non-zero, batch scoring records it and
goes on.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Iterable


class MedtlError(Exception):
    """Base class of medtl's own errors (message is one line, user-facing)."""


def _printable(text: str) -> str:
    """``text`` with control characters as ``\\xNN``: a newline in a file name must not split a
    one-line message."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: "\\x%02x" % ord(m.group()), text)


class ScanError(MedtlError, ValueError):
    """A scan could not be read. ``path`` names the file or folder."""

    def __init__(self, path: str | os.PathLike | None, reason: str, fix: str | None = None):
        self.path = None if path is None else str(path)
        self.reason = reason
        self.fix = fix
        where = f"{_printable(self.path)}: " if self.path else ""
        msg = f"{where}{reason}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)

    def __reduce__(self) -> tuple:
        # picklable with its fields (worker and child processes send errors back)
        return type(self), (self.path, self.reason, self.fix)


class UnsupportedFormatError(ScanError):
    """The file is not DICOM, NIfTI or a supported 2D image."""


class NotAnImageError(ScanError):
    """A valid DICOM object that carries no image (SEG, RTSTRUCT, SR, presentation state...)."""


class CorruptFileError(ScanError):
    """The file claims a supported format but is truncated or malformed."""


class SeriesError(ScanError):
    """A folder/zip holds no usable series, or the requested series does not exist."""


class DimensionError(ScanError):
    """A single 2D image given to a 3D model, or a volume to a 2D one."""


class DomainError(ScanError):
    """A readable scan of a kind the model was not trained on (another modality, colour vs gray)."""


class BlankScanError(DomainError):
    """A scan whose every voxel has the same value: nothing to classify (an empty export, a black frame)."""


class WeightsError(MedtlError):
    """Pretrained weights are missing, unknown, or do not match their checksum."""


class ConfigError(MedtlError, ValueError):
    """A configuration file or override is invalid."""


class ArgumentError(MedtlError, ValueError):
    """An argument of a Python call is invalid (an unknown name, a value out of range, a wrong shape); a
    ValueError too, as these were before."""


class ArgumentIndexError(ArgumentError, IndexError):
    """An index argument out of range (a slice number); an IndexError too, as it was before."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong kind (not a tensor, a model without stages); a TypeError too, as it was before."""


def one_line(exc: BaseException, limit: int = 300, typed: bool = True) -> str:
    """One line of at most ``limit`` characters saying what ``exc`` was.

    medtl's own errors give their message; other exceptions give ``Type: message``
    (``typed=False``: the message alone, for wrapping a library's error in a medtl
    message). Whitespace runs, newlines included, collapse to one space. A message too long for
    ``limit`` loses the middle of its path (a scan error's, or a medtl message's leading
    ``PATH: ``), not its reason and fix: a file deep in a PACS download folder (three
    64-character UIDs) otherwise kept only its path.
    """
    text = str(exc) if isinstance(exc, MedtlError) or not typed else f"{type(exc).__name__}: {exc}"
    where = None
    if isinstance(exc, ScanError) and exc.path:
        where = _printable(exc.path)
    elif isinstance(exc, MedtlError) and ": " in text and re.search(r"[/\\]", text.split(": ", 1)[0]):
        where = text.split(": ", 1)[0]
    if where and len(text) > limit:
        room = limit - (len(text) - len(where)) - 3
        if room >= 24:  # its first folders and its file name stay
            head = room // 3
            text = text.replace(where, where[:head] + "..." + where[len(where) - (room - head):], 1)
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to a mistyped ``word``, else None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else None
