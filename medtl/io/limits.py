"""Budgets every reader checks *before* it allocates: hostile or broken files are refused cheaply.

A 9 KB DICOM can claim two billion frames, a 100-byte ``.nii.gz`` a 1200³ volume, a
3 MB zip a 3 GiB member. Every reader in :mod:`medtl.io` computes what a file claims
(frames x rows x columns x samples x bytes, NIfTI dims, PNG/TIFF pixels, zip member
sizes, deflate output) from its header and refuses it with one line naming the claim
when it exceeds these limits, before any per-frame work or allocation:

==============================  =================  ====================================================
environment variable            default            what it bounds
==============================  =================  ====================================================
``MEDTL_MAX_BYTES``             2 GiB              decoded pixels of one scan; one zip member or
                                                   deflated data set once decompressed; one file read
``MEDTL_MAX_VOXELS``            2**29 (536 M)      voxels x channels of one scan (512 x 512 x 2048)
``MEDTL_MAX_FRAME_PIXELS``      2**26 (67 M)       pixels of one 2D frame or image (8192 x 8192)
``MEDTL_MAX_FRAMES``            2**16 (65,536)     frames (slices) of one scan: each costs header work
                                                   (its position, orientation, spacing), which a small
                                                   file claiming a million tiny frames made minutes long
==============================  =================  ====================================================

Values accept plain integers or a unit suffix (``"4GiB"``, ``"512M"``, ``"1e9"``). They
are read from the environment each time a reader runs, so a CLI flag, the app or a test
can change them (``with override(max_bytes=...)``; the reader processes medtl starts while
one is in force get it through :func:`environ`). Claims are also checked against the
bytes actually present (an uncompressed DICOM whose pixel data is shorter than its
header claims is refused before any frame is looked at).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

from medtl.errors import ScanError

__all__ = ["Limits", "LimitError", "current", "override", "environ", "check_pixels", "human_bytes", "ENV"]

#: Environment variable of each limit.
ENV = {"max_bytes": "MEDTL_MAX_BYTES", "max_voxels": "MEDTL_MAX_VOXELS",
       "max_frame_pixels": "MEDTL_MAX_FRAME_PIXELS", "max_frames": "MEDTL_MAX_FRAMES"}

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "b": 1}


class LimitError(ScanError):
    """A file claims more than a configured budget (bytes, voxels, frame pixels, frames)."""


@dataclass(frozen=True)
class Limits:
    """The budgets in force (see the module docstring)."""

    max_bytes: int = 2 * 2**30
    max_voxels: int = 2**29
    max_frame_pixels: int = 2**26
    max_frames: int = 2**16


_OVERRIDE: list[Limits] = []


def parse_size(text: str) -> int:
    """``"2GiB"`` -> 2147483648; plain numbers (``"1e9"``) too. Raises ValueError."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 2147483648, 2GiB, 512M)")
    value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise ValueError(f"a limit must be positive, got {text!r}")
    return value


def current() -> Limits:
    """The limits now: an :func:`override` in force, else the environment, else the defaults."""
    if _OVERRIDE:
        return _OVERRIDE[-1]
    values = {}
    for f in fields(Limits):
        raw = os.environ.get(ENV[f.name])
        if raw:
            try:
                values[f.name] = parse_size(raw)
            except ValueError as exc:
                raise ScanError(None, f"{ENV[f.name]}: {exc}", "fix or unset the environment variable") from None
    return Limits(**values)


@contextlib.contextmanager
def override(**changes: int) -> Iterator[Limits]:
    """Use other limits inside a ``with`` block: in this process (every thread), and in the reader
    processes medtl starts inside it (batch scoring's workers, the app's upload reader: :func:`environ`)."""
    lim = replace(current(), **changes)
    _OVERRIDE.append(lim)
    try:
        yield lim
    finally:
        _OVERRIDE.remove(lim)


def environ() -> dict[str, str]:
    """This process's environment with the limits in force written as ``MEDTL_MAX_*``: what a child
    process started now must see, an :func:`override` included (a child reads only its environment)."""
    env = dict(os.environ)
    if _OVERRIDE:
        env.update({ENV[f.name]: str(getattr(_OVERRIDE[-1], f.name)) for f in fields(Limits)})
    return env


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _count(n: float) -> str:
    return f"{n:,.0f}" if n < 1e12 else f"{n:.3g}"


def _fix(var: str) -> str:
    return f"if it is a real scan, raise {var}"


def check_pixels(name: str | os.PathLike | None, what: str, *, frames: int, rows: int, cols: int,
                 samples: int = 1, itemsize: float = 2, limits: Limits | None = None) -> int:
    """Refuse a claim of ``frames`` x ``rows`` x ``cols`` x ``samples`` values of ``itemsize`` bytes.

    ``what`` names the claim in the message (``"header claims"``). Returns the decoded
    size in bytes. Python integers: no overflow whatever the header says.
    """
    lim = limits or current()
    frames, rows, cols, samples = (int(v) for v in (frames, rows, cols, samples))
    if min(frames, rows, cols, samples) < 1:
        raise LimitError(name, f"{what} an empty image ({frames} frames of {rows} x {cols} x {samples})",
                         "re-export the file")
    shape = f"{_count(frames)} frame(s) of {rows} x {cols}" + (f" x {samples} samples" if samples > 1 else "")
    if frames > lim.max_frames:
        raise LimitError(name, f"{what} {shape}: over the limit of {_count(lim.max_frames)} frames; refused",
                         _fix(ENV["max_frames"]))
    if rows * cols > lim.max_frame_pixels:
        raise LimitError(name, f"{what} {shape}: {_count(rows * cols)} pixels per frame, over the limit of "
                         f"{_count(lim.max_frame_pixels)}; refused", _fix(ENV["max_frame_pixels"]))
    voxels = frames * rows * cols * samples
    if voxels > lim.max_voxels:
        raise LimitError(name, f"{what} {shape}: {_count(voxels)} values, over the limit of "
                         f"{_count(lim.max_voxels)}; refused", _fix(ENV["max_voxels"]))
    nbytes = int(voxels * itemsize)
    if nbytes > lim.max_bytes:
        raise LimitError(name, f"{what} {shape}: {human_bytes(nbytes)}, over the limit of "
                         f"{human_bytes(lim.max_bytes)}; refused", _fix(ENV["max_bytes"]))
    return nbytes


def check_bytes(name: str | os.PathLike | None, what: str, nbytes: int, limit: int | None = None) -> None:
    """Refuse ``nbytes`` (a file, a zip member, decompressed data) beyond ``limit`` (default ``max_bytes``)."""
    limit = current().max_bytes if limit is None else limit
    if nbytes > limit:
        raise LimitError(name, f"{what} {human_bytes(nbytes)}, over the limit of {human_bytes(limit)}; refused", _fix(ENV["max_bytes"]))
