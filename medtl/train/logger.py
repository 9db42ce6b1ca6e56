"""Per-epoch training metrics to a CSV (flushed per row) and optionally TensorBoard.

:class:`MetricLogger` writes ``metrics.csv`` of a run; :func:`read_history` reads it
back with numbers parsed. Kept apart from :mod:`medtl.train.metrics`, which holds only
pure functions over arrays.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medtl._fileutil import atomic_path, error_at

__all__ = ["MetricLogger", "read_history"]


def _parse_cell(text: str) -> Any:
    """One CSV cell: int, float, NaN when empty, else the text."""
    if text == "":
        return math.nan
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a :class:`MetricLogger` CSV; numbers parsed, empty cells NaN."""
    with open(path, newline="") as f:
        return [{key: _parse_cell(value) for key, value in row.items()} for row in csv.DictReader(f)]


_TB_WARNED = False


def _tensorboard_writer(log_dir: Path, purge_step: int | None) -> Any:
    """A ``SummaryWriter``, or None (warned once per process) when tensorboard is absent."""
    global _TB_WARNED
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _TB_WARNED:
            warnings.warn("tensorboard is not installed; metrics go to the CSV only "
                          "(pip install tensorboard)", stacklevel=3)
            _TB_WARNED = True
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class MetricLogger:
    """Append per-epoch metric rows to a CSV (flushed per row) and optionally TensorBoard.

    Columns are ``epoch`` then ``columns`` if given, else the keys of the first row; a
    later row with new keys rewrites the file once with the wider header (earlier rows
    get empty cells), so no value is ever dropped. ``resume=True`` keeps an existing CSV
    and, with ``start_epoch``, drops its rows with ``epoch >= start_epoch`` (the epochs
    about to be re-run); TensorBoard events from those steps are purged the same way.
    ``resume=False`` replaces any existing file (at creation when ``columns`` are given,
    else at the first row).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        columns: list[str] | None = None,
        *,
        tensorboard_dir: str | os.PathLike | None = None,
        resume: bool = False,
        start_epoch: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._columns: list[str] | None = (
            ["epoch"] + [c for c in columns if c != "epoch"] if columns is not None else None
        )
        self._rows: list[dict[str, Any]] = []
        if resume and self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                existing = list(reader)
                header = list(reader.fieldnames or [])
            if start_epoch is not None:
                existing = [r for r in existing if r.get("epoch", "") == "" or int(float(r["epoch"])) < start_epoch]
            if header:
                self._columns = header + [c for c in (self._columns or []) if c not in header]
            self._rows = existing
        self._file: Any = None
        self._closed = False
        if self._columns is not None:
            self._rewrite()
        self._writer = None
        if tensorboard_dir is not None:
            self._writer = _tensorboard_writer(Path(tensorboard_dir), start_epoch if resume else None)

    @property
    def columns(self) -> list[str] | None:
        """CSV header, or None before the first row when no columns were given."""
        return list(self._columns) if self._columns is not None else None

    def _rewrite(self) -> None:
        """Write header and kept rows atomically, then reopen the file for appending."""
        if self._file is not None:
            self._file.close()
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._columns, restval="", extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self._rows)
        self._file = open(self.path, "a", newline="")

    def log(self, epoch: int, **metrics: Any) -> None:
        """Append one row (``epoch`` plus ``metrics``) and flush it to disk."""
        if self._closed:
            raise RuntimeError(f"MetricLogger for {self.path} is closed; create a new one with resume=True")
        row: dict[str, Any] = {"epoch": int(epoch)}
        for name, value in metrics.items():
            if isinstance(value, (np.floating, np.integer)):
                value = value.item()
            elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:
                value = value.item()  # 0-d tensor/array
            row[name] = value
        if self._columns is None:
            self._columns = list(row)
            self._rows.append(row)
            self._rewrite()
        elif any(name not in self._columns for name in row):
            self._columns += [name for name in row if name not in self._columns]
            self._rows.append(row)
            self._rewrite()
        else:
            self._rows.append(row)
            try:
                csv.DictWriter(self._file, fieldnames=self._columns, restval="").writerow(row)
                self._file.flush()
            except OSError as exc:  # a full disk: name the file (a flush's error names none)
                raise error_at(exc, self.path) from exc
        if self._writer is not None:
            for name, value in row.items():
                if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(name, value, int(epoch))
            self._writer.flush()

    @property
    def history(self) -> list[dict[str, Any]]:
        """All rows written so far (including rows kept on resume), as read back from the CSV."""
        return read_history(self.path) if self.path.exists() else []

    def close(self) -> None:
        """Close the CSV and the TensorBoard writer; safe to call twice."""
        self._closed = True
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as exc:  # the row a full disk refused, flushed again
                raise error_at(exc, self.path) from exc
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
