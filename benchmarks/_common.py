"""What the benchmark scripts share: the JSON they write names its script, and an ``--out`` file that
is not a JSON written by the same script (a person's file, another script's results) is never replaced.

Each script calls :func:`refuse_foreign` on its ``--out`` before any work (so a wrong path costs
seconds, not hours) and writes through :func:`write_result`, which checks again and writes to a
temporary file renamed into place.
"""

from __future__ import annotations

import json
import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from medtl._fileutil import atomic_path

#: A JSON this large is not one of the results (theirs are kilobytes): refused without reading it.
MAX_JSON_BYTES = 64 << 20


def script_key(file: str | os.PathLike) -> str:
    """The ``"script"`` value for a script file: its path from the repository root, ``benchmarks/NAME.py``."""
    return f"benchmarks/{Path(file).name}"


def work_folder(given: Path | None, prefix: str) -> tuple[Path, Callable[[], None]]:
    """``(folder, cleanup)``: the folder the user gave (kept), or a new temporary one that ``cleanup`` removes."""
    if given is not None:
        return given, lambda: None
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    return Path(tmp.name), tmp.cleanup


def machine() -> dict[str, Any]:
    """The machine a timing was taken on, and how busy it was: on a shared machine timings overstate an idle one."""
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "loadavg_1_5_15_min": [round(x, 2) for x in os.getloadavg()]}


def refuse_foreign(path: str | os.PathLike, script: str) -> None:
    """Exit with one line if ``path`` exists and is not a JSON object whose ``"script"`` is ``script``.

    Re-running a script onto its own earlier JSON passes; anything else there is kept."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    why = None
    if path.is_symlink() or not path.is_file():
        why = "it is not a plain file"
    elif path.stat().st_size > MAX_JSON_BYTES:
        why = "it is larger than any result JSON"
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            data = None
        owner = data.get("script") if isinstance(data, dict) else None
        if owner != script:
            named = isinstance(owner, str) and re.fullmatch(r"benchmarks/[\w.-]{1,80}", owner)  # else not echoed
            why = f"it was written by {owner}" if named else f"it is not a JSON written by {script}"
    if why:
        raise SystemExit(f"{script}: refusing to replace {path}: {why}; choose another --out or move that file away")


def write_result(path: str | os.PathLike, result: dict[str, Any], script: str, indent: int | None = 2) -> None:
    """Write ``result`` as JSON to ``path`` with ``"script": script`` first, unless :func:`refuse_foreign` objects."""
    refuse_foreign(path, script)
    with atomic_path(path) as part:  # makes the parent folder too
        part.write_text(json.dumps({"script": script, **result}, indent=indent, default=float) + "\n")
