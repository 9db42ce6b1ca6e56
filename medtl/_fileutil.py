"""Small file helpers shared by every writer in medtl."""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Collection, Iterator

#: errno values that say the output's disk or folder cannot take a file: the fix is free space or another place.
CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


#: The endings of a scan's file name that a file named after it leaves out (``.nii.gz`` before ``.nii``).
SCAN_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".zip", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def file_safe(text: str) -> str:
    """``text`` for a file name: each run of characters other than letters, digits, ``.``, ``_`` and ``-``
    becomes one ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def scan_stem(name: str) -> str:
    """A scan's file ``name`` without its scan ending (:data:`SCAN_SUFFIXES`, any case), :func:`file_safe`; may be
    empty."""
    suffix = next((x for x in SCAN_SUFFIXES if name.lower().endswith(x)), "")
    return file_safe(name[: len(name) - len(suffix)])


def error_at(exc: OSError, path: str | os.PathLike) -> OSError:
    """``exc`` naming ``path``: a flush's or a temporary file's error names none, or the wrong file."""
    return type(exc)(exc.errno, exc.strerror, str(path))


def _disk_full(folder: Path) -> bool:
    """Whether ``folder``'s file system has no free block left (for anyone, or for non-root users)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # statvfs: POSIX only
        return False
    return st.f_bavail == 0 or st.f_bfree == 0


def write_error(exc: Exception, path: Path, tmp_path: Path) -> OSError | None:
    """The error to raise instead of ``exc`` (raised while writing ``tmp_path`` for ``path``): an OSError
    naming ``path``, not the temporary file, and ENOSPC where a library hid a full disk in its own
    exception (torch: ``unexpected pos``, safetensors: ``(os error 28)``, pydicom: an OSError without errno);
    ``None`` to raise ``exc`` as it is."""
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.filename in (None, str(tmp_path)):
            return error_at(exc, path)
        return None
    if type(exc).__module__.startswith("medtl"):
        return None
    code = re.search(r"\(os error (\d+)\)|\[Errno (\d+)\]", str(exc))  # Rust's and Python's way of saying it
    number = int(code[1] or code[2]) if code else None
    if number in CANNOT_WRITE:
        return OSError(number, os.strerror(number), str(path))
    if _disk_full(path.parent):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    Readers never see a half-written file and an existing file survives a failed
    write. The temporary name keeps the suffixes so libraries that dispatch on
    them (nibabel: ``.nii.gz``) still work. A failed write raises an OSError naming ``path``
    (ENOSPC when the disk filled up, whatever the writing library raised).
    """
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the whole write, with errno's bare words
        raise IsADirectoryError(errno.EISDIR, "is a folder: give a file name (inside it) to write to", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as exc:  # a read-only or full folder: name the file asked for, not a random temporary name
        raise error_at(exc, path) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except Exception as exc:
        named = write_error(exc, path, tmp_path)
        if named is None:
            raise
        raise named from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: What :func:`atomic_path` names its temporary file: ``.NAME.XXXXXXXX.tmpSUFFIXES`` (mkstemp's 8 characters).
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>(\.[^.]+)*)")


def remove_stale_temps(folder: str | os.PathLike, names: Collection[str] | None = None) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` left in ``folder`` when its process was killed
    mid-write (a killed training leaves a whole checkpoint's worth each time); returns what went.

    Only for a folder whose writer holds it alone (a run folder under its lock), or, with ``names``, only
    the temporary files of those file names, for a writer that holds them alone (a scores CSV under its
    lock): a temporary file of a write still going on would be removed too. Files not named as
    :func:`atomic_path` names them stay.
    """
    gone = []
    for p in Path(folder).glob(".*.tmp*"):
        m = _TEMP_NAME.fullmatch(p.name)
        if names is not None and (m is None or m["name"] not in names):
            continue
        if m and p.is_file() and "".join(Path(m["name"]).suffixes) == m["suffix"]:
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (one of another user counts: it cannot be signalled, but it is there)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: The longest line of a manifest CSV read: a row is a path and a few short columns.
MAX_CSV_LINE = 1 << 20


def _csv_lines(f: Any, limit: int = MAX_CSV_LINE) -> Iterator[str]:
    """The lines of text file ``f`` for :mod:`csv`, refusing one over ``limit`` characters before reading it
    whole (a 2 GB line filled the memory) and a NUL character (a binary file, not text)."""
    while line := f.readline(limit + 1):
        if len(line) > limit:
            raise csv.Error(f"a line over {limit:,} characters")
        if "\0" in line:
            raise csv.Error("a NUL character: binary data, not text")
        yield line


def read_csv_rows(path: Path, error: type[Exception], columns: str) -> tuple[list[str], list[dict[str, str]]]:
    """Column names and rows of a manifest CSV as a spreadsheet saves it (a byte-order mark, padded
    column names); an unreadable, non-UTF-8 or malformed file (a quote never closed, a NUL character, a
    line over :data:`MAX_CSV_LINE` characters) is ``error`` in one line, ``columns`` saying which the
    file should have."""
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(_csv_lines(f), strict=True)
            fields = [c.strip() for c in (reader.fieldnames or [])]
            return fields, [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text (save the manifest as CSV UTF-8)") from None
    except csv.Error as exc:
        line = f"the row from line {reader.line_num + 1}: " if reader is not None else ""
        what = "a quote (\") opened and never closed" if str(exc) == "unexpected end of data" else exc
        raise error(f"{path}: not a readable CSV ({line}{what}; {columns})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, atomically; NaN is refused (not valid JSON), other types as str."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False, default=str))


def hold_lock(lock_path: str | os.PathLike, wait: bool = False) -> Any:
    """An exclusive advisory lock on ``lock_path`` (created if missing), held until the returned file is
    closed; the OS frees it when the process dies, so a killed run leaves no stale lock. ``None`` when
    another process holds it (with ``wait``: waits for it instead). Without advisory locks (not POSIX)
    the file comes back unlocked."""
    fh = open(lock_path, "a")  # noqa: SIM115 - the caller closes it to release the lock
    try:
        import fcntl
    except ImportError:
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    try:  # who holds it, for the refusal of the next one (lock_holder)
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
    except OSError:
        pass
    return fh


def lock_held(lock_path: str | os.PathLike) -> bool:
    """Whether another process holds :func:`hold_lock` on ``lock_path`` now; read-only (a shared lock tried
    and let go at once), so a reader may ask in a folder it cannot write. False without the file."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        with open(lock_path) as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except OSError:
        return False
    return False


def lock_holder(lock_path: str | os.PathLike) -> str:
    """`` (pid N)`` for a refusal message: the running process :func:`hold_lock` recorded in ``lock_path``;
    empty when the file names none, or a process that is gone."""
    try:
        pid = int(Path(lock_path).read_text().strip() or 0)
    except (OSError, ValueError):
        return ""
    return f" (pid {pid})" if pid != os.getpid() and pid_alive(pid) else ""


def read_small_text(path: str | os.PathLike, limit: int, error: type[Exception], what: str) -> str:
    """The UTF-8 text of a small file medtl is given to read (a config, a secret), reading at most ``limit``
    bytes of it: a file of hundreds of MB (or ``/dev/zero``) took minutes and gigabytes to refuse. Any problem
    is ``error`` in one line naming the file, never quoting it (``what``: "config", "PACS config"...)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise error(f"{path}: over {limit:,} bytes, too large for a {what} (is it the right file?)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text (save the {what} as UTF-8)") from None


#: The largest YAML file medtl reads (a config, the PACS settings): the shipped recipes are under 3 KB, and
#: PyYAML, pure Python, took 20 s over a MB of one long list on a busy CPU core.
MAX_YAML_BYTES = 1 << 18

#: The most levels of nesting a YAML file medtl reads may have: a config needs four or five, and PyYAML
#: composes nodes recursively, so a file of ``[[[[...`` a thousand deep ended in a RecursionError.
MAX_YAML_DEPTH = 100


@functools.cache
def depth_limited_loader() -> type:
    """PyYAML's safe loader, refusing nesting deeper than :data:`MAX_YAML_DEPTH` with a ``yaml.YAMLError``."""
    import yaml

    class DepthLimitedLoader(yaml.SafeLoader):
        """A SafeLoader that counts the depth it composes at."""

        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self._depth >= MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested over {MAX_YAML_DEPTH} levels deep (flatten it)", self.peek_event().start_mark)
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return DepthLimitedLoader


@functools.cache
def _unique_key_loader() -> type:
    import yaml

    class UniqueKeyLoader(depth_limited_loader()):  # type: ignore[misc]
        """PyYAML's safe loader, refusing a key given twice in one mapping: it keeps the last silently, so
        a second ``train:`` (or ``dicomweb:``) section dropped every key of the first without a word."""

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader refuses it itself
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {first + 1}; keep one)",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` of a file medtl is given to read (a config), refusing duplicate keys with a
    ``yaml.YAMLError`` that marks the line of the second."""
    import yaml

    return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass


#: PyYAML's messages that quote the text they stopped at (``found undefined alias '...'``, ``the tag '...'``,
#: ``found character '...'``), which may be a secret's value, or part of it
_QUOTED_INPUT = re.compile(r"""\b(found|alias|tag|character|handle)\b([^'"]*?)"""
                           r"""(?!'<[a-z ]+>')('(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""")


def yaml_problem(exc: Any, hide_values: bool = False) -> str:
    """``line N: what`` of a PyYAML error, on one line (its own message spans several). ``hide_values``:
    without the text of the file it quotes (an alias, a tag, a character), for a file holding secrets."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "'\\t'" in problem:
        problem += "; indent with spaces, not tabs"
    if hide_values:
        problem = _QUOTED_INPUT.sub(r"\1\2(not shown)", problem)
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem
