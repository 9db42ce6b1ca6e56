"""Where batch scoring writes: ``scores.csv`` (append-only, resumable), ``errors.csv``, the lock, Parquet.

- :class:`CsvAppender` grows a CSV by whole rows only (one write per group, then flush +
  fsync), so a kill leaves at most one partial line at the end.
- :func:`recover_scores` reads a partly written ``scores.csv`` back: drops the cut-off
  line (atomic rewrite), refuses a file of another model, returns the keys already done.
- :func:`lock_output` keeps two runs from appending to one file.
- :func:`write_parquet` converts the finished CSV (atomically).
- :func:`saliency_stem` names a study's saliency map.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from medtl._fileutil import atomic_path, error_at, hold_lock, lock_holder, scan_stem
from medtl.errors import MedtlError
from medtl.infer.studies import Study

__all__ = ["ERROR_COLUMNS", "AtomicCsv", "CsvAppender", "check_ours", "check_parquet_ours", "check_parquet_support",
           "check_writable_folder", "csv_cell", "default_errors_path", "lock_output", "read_cell", "recover_scores",
           "saliency_stem", "score_columns", "write_fresh", "write_parquet"]

#: Columns of ``errors.csv``.
ERROR_COLUMNS = ["path", "key", "stage", "reason"]

#: First characters that make a spreadsheet read a cell as a formula (CSV injection, CWE-1236): a file
#: named ``=HYPERLINK(...).png`` would put one in ``key`` and ``path``.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as written to a CSV: text a spreadsheet would run as a formula gets a leading ``'``
    (OWASP's advice), which spreadsheets show as text, and so does text already starting with one (so
    :func:`read_cell` can tell them apart); numbers are left alone."""
    if isinstance(value, str) and value.startswith((*_FORMULA_START, "'")):
        return "'" + value
    return value


def read_cell(text: str) -> str:
    """The value :func:`csv_cell` wrote as ``text`` (how resume reads its keys back)."""
    return text[1:] if text.startswith("'") else text


def _cells(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: csv_cell(v) for k, v in row.items()} for row in rows]


def score_columns(class_names: Sequence[str]) -> list[str]:
    """Columns of ``scores.csv`` for a model with these classes (``scored_at`` last: a row cut
    short by a kill lacks it, which is how resume recognises it)."""
    return (["key", "path", "format", "series_uid", "shape"] + [f"p_{c}" for c in class_names]
            + ["predicted", "decision", "threshold", "ood_score", "ood_flag", "notes", "model", "scored_at"])


def _drop_cut_row(path: Path, chunk: int = 1 << 16) -> None:
    """Truncate ``path`` after its last newline: a row a kill cut short would otherwise be joined by the
    next appended row into one broken line (the PACS ledgers are appended to across runs). Reads back
    from the end only as far as that newline."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb+") as fh:
        end = size
        while end > 0:
            start = max(0, end - chunk)
            fh.seek(start)
            block = fh.read(end - start)
            if end == size and block.endswith(b"\n"):
                return
            newline = block.rfind(b"\n")
            if newline >= 0:
                fh.truncate(start + newline + 1)
                return
            end = start
        fh.truncate(0)


class CsvAppender:
    """A CSV that only grows by whole rows: one ``write`` per group of rows, then flush + fsync. A row an
    earlier kill cut short is dropped first; a missing or empty file gets the header."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        _drop_cut_row(path)
        if not path.exists() or path.stat().st_size == 0:
            write_fresh(path, columns)
        # backslashreplace: a path that is not UTF-8 never stops a batch while its row is written
        self.fh = open(path, "a", newline="", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore")
        w.writerows(_cells(rows))
        try:
            self.fh.write(buf.getvalue())
            self.fh.flush()
            os.fsync(self.fh.fileno())
        except OSError as exc:
            raise error_at(exc, self.path) from exc

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError as exc:  # the rows a full disk refused, flushed again
            raise error_at(exc, self.path) from exc


def default_errors_path(out_csv: Path) -> Path:
    """The errors file of ``out_csv``: ``scores.csv`` -> ``scores.errors.csv`` (two runs with different
    ``--out`` in one folder keep their own failures)."""
    stem = out_csv.name[:-4] if out_csv.name.lower().endswith(".csv") else out_csv.name
    return out_csv.with_name(f"{stem}.errors.csv")


def check_ours(path: Path, columns: list[str], option: str) -> None:
    """Refuse to replace ``path`` unless medtl wrote it (empty, or its first line is ``columns``)."""
    if not path.exists():
        return
    if not path.is_file():
        raise MedtlError(f"{path}: is not a file; choose another {option}")
    try:
        with open(path, "rb") as fh:
            first = fh.readline(4096)
    except OSError as exc:
        raise MedtlError(f"{path}: cannot be read ({exc.strerror}); choose another {option}") from None
    if first.strip() and first.rstrip(b"\r\n").decode("utf-8", "replace") != ",".join(columns):
        raise MedtlError(f"{path}: exists and was not written by medtl (its first line is not "
                         f"{','.join(columns)!r}); refusing to replace it: move it or choose another {option}")


def check_writable_folder(folder: Path, option: str) -> None:
    """Create ``folder`` if needed and check a file can be written there; one line otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".medtl-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise MedtlError(f"{folder}: cannot write there ({exc.strerror or type(exc).__name__}); "
                         f"choose another {option} folder or fix its permissions") from None


class AtomicCsv:
    """A CSV built by appending whole rows to a hidden partial file, published by an atomic rename on close.

    Readers never see a half-written file, a killed or crashed run leaves the previous file whole
    (:meth:`abandon`), and the partial file (``.<name>.partial``) is replaced by the next run.
    """

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial")
        write_fresh(self.partial, columns)
        self._rows = CsvAppender(self.partial, columns)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        self._rows.write(rows)

    def close(self) -> None:
        """Publish the rows: the run that wrote them finished."""
        self._rows.close()
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        """Close without publishing (the run stopped early): its rows stay in the hidden partial file only."""
        with contextlib.suppress(OSError):
            self._rows.close()


def write_fresh(path: Path, columns: list[str], rows: Sequence[dict[str, Any]] = ()) -> None:
    """Replace ``path`` atomically by a CSV of ``columns`` holding ``rows``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(_cells(rows))


def recover_scores(path: Path, columns: list[str], model_id: str) -> set[str]:
    """Keys already in ``path``; a trailing row cut short by a kill is dropped (atomic rewrite)."""
    if not path.exists() or path.stat().st_size == 0:
        write_fresh(path, columns)
        return set()
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]  # bytes after the last newline are a cut-off row
    text = complete.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        write_fresh(path, columns)
        return set()
    if header != columns:
        raise MedtlError(f"{path}: holds other columns ({', '.join(header[:8])}...) than this model writes "
                         "(scores of another model?); use another --out or remove the file")
    rows, dropped = [], 0
    for fields in reader:
        if len(fields) == len(columns) and fields[-1] and fields[0]:
            rows.append(dict(zip(columns, map(read_cell, fields))))
        else:
            dropped += 1
    others = {r["model"] for r in rows if r["model"] != model_id}
    if others:
        raise MedtlError(f"{path}: holds scores of another model ({sorted(others)[0]}, this one is {model_id}); "
                         "use another --out or remove the file")
    if dropped or len(complete) != len(raw):
        write_fresh(path, columns, rows)
    return {r["key"] for r in rows}


def lock_output(out_csv: Path, flag: str = "--out") -> IO[str]:
    """Hold an exclusive lock on ``.<name>.lock`` beside the output so two runs never append to one file
    (``flag``: the option that named it, for the refusal).

    The lock is on a sidecar because resume replaces the CSV itself. Released when the
    returned file is closed, or by the OS when the process dies (a killed run leaves no stale lock).
    """
    lock_path = out_csv.with_name(f".{out_csv.name}.lock")
    fh = hold_lock(lock_path)
    if fh is None:
        raise MedtlError(f"{out_csv}: another `medtl score`{lock_holder(lock_path)} is writing this file; wait for it "
                         f"or use another {flag}")
    return fh


def saliency_stem(study: Study) -> str:
    """A file-system-safe, unique file name stem for ``study``'s saliency map (name + key hash)."""
    name = scan_stem(Path(study.path.rstrip("/\\")).name or "study")[:60] or "study"
    return f"{name}_{hashlib.sha1(study.key.encode(), usedforsecurity=False).hexdigest()[:10]}"


def check_parquet_support() -> None:
    """Fail before scoring, not after, when Parquet output is asked for but cannot be written."""
    if importlib.util.find_spec("pandas") is None or importlib.util.find_spec("pyarrow") is None:
        raise MedtlError("--parquet needs pandas and pyarrow: pip install 'medtl[parquet]' (or 'pyarrow>=14' 'pandas>=2.0')")


def check_parquet_ours(path: Path, columns: list[str]) -> None:
    """Refuse to replace ``path`` unless it is a Parquet file of exactly ``columns`` (one :func:`write_parquet`
    wrote); only its footer is read."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
    except Exception:  # noqa: BLE001 - not a Parquet file medtl could have written
        names = None
    if names != columns:
        raise MedtlError(f"{path}: exists and is not a Parquet file of these scores' columns; refusing to replace "
                         "it: move it or choose another --out")


def write_parquet(csv_path: Path, out: Path) -> None:
    """``scores.csv`` -> ``scores.parquet`` (atomic), text columns kept as text."""
    import pandas as pd

    df = pd.read_csv(csv_path, dtype={"key": str, "path": str, "format": str, "series_uid": str, "shape": str,
                                      "predicted": str, "decision": str, "notes": str, "model": str,
                                      "scored_at": str}, keep_default_na=False,
                     na_values={c: [""] for c in ("threshold",)})
    with atomic_path(out) as tmp:
        df.to_parquet(tmp, index=False)
