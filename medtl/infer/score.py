"""Batch scoring: a folder of studies (or a manifest CSV) -> ``scores.csv``, streamed, resumable, safe.

    summary = score("runs/tiny", "incoming/", "scores.csv", workers=2)
    summary.exit_code   # 0: every study scored; 1: some failed (see errors.csv)

How it runs:

- **Discovery** (:mod:`medtl.infer.studies`) lists the studies and their keys; files that
  cannot be studies (unrecognised content, empty folders) go straight to ``errors.csv``.
- **Streaming**: worker processes (a torch ``DataLoader``; or Ray tasks with
  ``engine="ray"``) decode and preprocess ahead; the main process batches the tensors and
  runs the model. Both engines call the same :func:`load_study`, and inference always
  happens in the calling process, so the engines give the same scores.
- **Resumable**: each batch's rows go to ``scores.csv`` in one write, then flush + fsync.
  A re-run reads the file back, drops a trailing partial line a kill may have left (the
  file is rewritten atomically), and skips every key already there: nothing is lost or
  scored twice. A file written by another model is refused rather than mixed.
- **Bad input never stops the batch**: a study that fails (unreadable, wrong
  dimensionality, model error) gets one row in ``errors.csv`` (path, key, stage, one-line
  reason). Failed studies are retried by the next run, so ``errors.csv`` is rewritten by
  each run and lists the failures of the latest run.
- Saliency maps (``saliency_dir``) are written (atomically) before the study's score row,
  so a resumed run never leaves a scored study without its map. Parquet
  (``scores.parquet``) is written atomically from the CSV at the end.

No patient name or ID is written: rows carry paths, UIDs, probabilities and decisions.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import functools
import hashlib
import io
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtl._fileutil import atomic_path
from medtl.errors import MedtlError
from medtl.infer.predictor import Predictor, write_saliency
from medtl.infer.studies import Discovery, Study, discover, one_line
from medtl.transforms import Preprocessing

__all__ = ["ERROR_COLUMNS", "ScoreSummary", "load_study", "score", "score_columns"]

#: Columns of ``errors.csv``.
ERROR_COLUMNS = ["path", "key", "stage", "reason"]
ENGINES = ("local", "ray")


@dataclass
class ScoreSummary:
    """Counts and timings of one :func:`score` run.

    ``decode_seconds`` adds up the time workers spent reading + preprocessing (over all
    workers); ``infer_seconds`` the model time in the main process (saliency excluded);
    ``wait_seconds`` the time the main process waited for decoded studies (high: decode-bound).
    """

    found: int = 0
    scored: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0
    out_csv: str = ""
    errors_csv: str = ""
    parquet: str | None = None
    saliency_dir: str | None = None
    engine: str = "local"
    workers: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    saliency_seconds: float = 0.0
    wait_seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 when at least one study failed (2 is the CLI's fatal error)."""
        return 1 if self.failed else 0

    @property
    def studies_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["studies_per_s"] = self.studies_per_s
        out["exit_code"] = self.exit_code
        return out

    def text(self) -> str:
        line = (f"scored {self.scored}, skipped {self.skipped} (already scored), failed {self.failed}"
                f"{f', ignored {self.ignored} companion file(s)' if self.ignored else ''}"
                f" in {self.seconds:.1f} s ({self.studies_per_s:.2f} studies/s) -> {self.out_csv}")
        if self.failed:
            line += f"\nfailures written to {self.errors_csv}"
        if self.parquet:
            line += f"\nparquet: {self.parquet}"
        return line


def score_columns(class_names: Sequence[str]) -> list[str]:
    """Columns of ``scores.csv`` for a model with these classes (``scored_at`` last: a row cut
    short by a kill lacks it, which is how resume recognises it)."""
    return (["key", "path", "format", "series_uid", "shape"] + [f"p_{c}" for c in class_names]
            + ["predicted", "decision", "threshold", "notes", "model", "scored_at"])


# --- the per-study work (shared by every engine) --------------------------------------------------

_PREP_CACHE: dict[str, Preprocessing] = {}


def _prep_of(prep: Preprocessing | dict[str, Any]) -> Preprocessing:
    if isinstance(prep, Preprocessing):
        return prep
    key = repr(sorted(prep.items()))
    if key not in _PREP_CACHE:
        _PREP_CACHE[key] = Preprocessing.from_dict(prep)
    return _PREP_CACHE[key]


def load_study(study: Study, prep: Preprocessing | dict[str, Any], keep_scan: bool = False) -> dict[str, Any]:
    """Read and preprocess one study; never raises on bad input.

    Returns ``{"study", "x" (numpy network input or None), "error" (one line or None),
    "format", "shape", "notes" (medtl warnings, e.g. missing slices), "scan" (when
    ``keep_scan``), "seconds"}``.
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {"study": study, "x": None, "error": None, "format": "", "shape": "", "notes": "",
                           "scan": None}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scan = study.load()
            x = _prep_of(prep)(scan)
        out["x"] = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        out["format"] = scan.format
        out["shape"] = "x".join(str(s) for s in scan.shape)
        notes = dict.fromkeys(" ".join(str(w.message).split()) for w in caught
                              if issubclass(w.category, UserWarning) and "medtl" in str(w.filename))
        out["notes"] = "; ".join(notes)
        if keep_scan:
            out["scan"] = scan
    except BaseException as exc:  # noqa: BLE001 - one bad study must not stop the batch
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        out["error"] = one_line(exc)
    out["seconds"] = time.perf_counter() - t0
    return out


# --- engines: iterators of load_study results -----------------------------------------------------

class _StudyDataset:
    """Map-style dataset for the torch DataLoader: item ``i`` is ``load_study(studies[i])``."""

    def __init__(self, studies: Sequence[Study], prep: dict[str, Any], keep_scan: bool) -> None:
        self.studies = list(studies)
        self.prep = prep
        self.keep_scan = keep_scan

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return load_study(self.studies[i], self.prep, self.keep_scan)


def _identity(x: Any) -> Any:
    return x


def _close_fds(fds: tuple[int, ...], _worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: drop the worker's forked copies of the output lock, so a killed run's
    workers, which outlive it by up to torch's 5 s liveness check, never keep a resumed run locked out."""
    for fd in fds:
        with contextlib.suppress(OSError):  # not inherited (spawn start method)
            os.close(fd)


def _local_stream(studies: Sequence[Study], prep: dict[str, Any], keep_scan: bool, workers: int,
                  batch_size: int, lock_fds: tuple[int, ...] = ()) -> Iterator[dict[str, Any]]:
    if workers <= 0:
        for s in studies:
            yield load_study(s, prep, keep_scan)
        return
    from torch.utils.data import DataLoader

    # DataLoader rather than a hand-rolled pool: it keeps per-worker prefetch queues, limits
    # each worker to one torch thread, and its workers exit when the main process dies.
    loader = DataLoader(_StudyDataset(studies, prep, keep_scan), batch_size=None, shuffle=False,
                        num_workers=min(workers, len(studies)), collate_fn=_identity,
                        prefetch_factor=max(2, -(-batch_size // workers)), persistent_workers=False,
                        worker_init_fn=functools.partial(_close_fds, lock_fds))
    yield from loader


def _ray_load(study: Study, prep: dict[str, Any], keep_scan: bool) -> dict[str, Any]:
    return load_study(study, prep, keep_scan)


def _ray_stream(studies: Sequence[Study], prep: dict[str, Any], keep_scan: bool, workers: int, batch_size: int,
                address: str | None) -> Iterator[dict[str, Any]]:
    """Ray tasks running :func:`load_study`; results in completion order, a bounded number in flight.

    Connects to ``address`` (or ``RAY_ADDRESS``, or an already initialised Ray); otherwise
    starts a local Ray with ``workers`` CPUs and shuts it down at the end. On a cluster, the
    study paths must be readable from every node (shared storage).
    """
    try:
        import ray
    except ImportError:
        raise MedtlError("--engine ray needs Ray: pip install 'medtl[ray]' (or 'ray>=2.9')") from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address or os.environ.get("RAY_ADDRESS"):
            kwargs["address"] = address or os.environ["RAY_ADDRESS"]
        else:
            kwargs["num_cpus"] = max(1, workers)
        ray.init(**kwargs)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=1)(_ray_load)
        prep_ref = ray.put(prep)
        window = max(2 * max(1, workers), 2 * batch_size)
        todo = iter(studies)
        in_flight: dict[Any, Study] = {}

        def submit() -> None:
            for s in todo:
                in_flight[task.remote(s, prep_ref, keep_scan)] = s
                if len(in_flight) >= window:
                    return

        submit()
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            ref = done[0]
            study = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a crashed worker fails its study, not the batch
                result = {"study": study, "x": None, "error": f"Ray task failed: {one_line(exc, 200)}",
                          "format": "", "shape": "", "notes": "", "scan": None, "seconds": 0.0}
            submit()
            yield result
    finally:
        if started:
            ray.shutdown()


# --- output files -------------------------------------------------------------------------------

class _CsvAppender:
    """A CSV that only grows by whole rows: one ``write`` per group of rows, then flush + fsync."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        self.fh = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore")
        w.writerows(rows)
        self.fh.write(buf.getvalue())
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _write_fresh(path: Path, columns: list[str], rows: Sequence[dict[str, Any]] = ()) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _recover_scores(path: Path, columns: list[str], model_id: str) -> set[str]:
    """Keys already in ``path``; a trailing row cut short by a kill is dropped (atomic rewrite)."""
    if not path.exists() or path.stat().st_size == 0:
        _write_fresh(path, columns)
        return set()
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]  # bytes after the last newline are a cut-off row
    text = complete.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        _write_fresh(path, columns)
        return set()
    if header != columns:
        raise MedtlError(f"{path}: holds other columns ({', '.join(header[:8])}...) than this model writes "
                         "(scores of another model?); use another --out or remove the file")
    rows, dropped = [], 0
    for fields in reader:
        if len(fields) == len(columns) and fields[-1] and fields[0]:
            rows.append(dict(zip(columns, fields)))
        else:
            dropped += 1
    others = {r["model"] for r in rows if r["model"] != model_id}
    if others:
        raise MedtlError(f"{path}: holds scores of another model ({sorted(others)[0]}, this one is {model_id}); "
                         "use another --out or remove the file")
    if dropped or len(complete) != len(raw):
        _write_fresh(path, columns, rows)
    return {r["key"] for r in rows}


def _lock(out_csv: Path) -> Any:
    """Hold an exclusive lock on ``.<name>.lock`` beside the output so two runs never append to one file.

    The lock is on a sidecar because resume replaces the CSV itself. Released when the
    returned file is closed, or by the OS when the process dies (a killed run leaves no stale lock).
    """
    fh = open(out_csv.with_name(f".{out_csv.name}.lock"), "a")  # noqa: SIM115 - closed by score()
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; documented as one run per output
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise MedtlError(f"{out_csv}: another `medtl score` is writing this file; wait for it or use another --out") \
            from None
    return fh


def _safe_stem(study: Study) -> str:
    name = Path(study.path.rstrip("/\\")).name or "study"
    for suffix in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".zip"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "study"
    return f"{name}_{hashlib.sha1(study.key.encode(), usedforsecurity=False).hexdigest()[:10]}"


def _check_parquet_support() -> None:
    import importlib.util

    if importlib.util.find_spec("pandas") is None or importlib.util.find_spec("pyarrow") is None:
        raise MedtlError("--parquet needs pandas and pyarrow: pip install 'medtl[parquet]' (or 'pyarrow>=14')")


def _write_parquet(csv_path: Path, out: Path) -> None:
    import pandas as pd

    df = pd.read_csv(csv_path, dtype={"key": str, "path": str, "format": str, "series_uid": str, "shape": str,
                                      "predicted": str, "decision": str, "notes": str, "model": str,
                                      "scored_at": str}, keep_default_na=False,
                     na_values={c: [""] for c in ("threshold",)})
    with atomic_path(out) as tmp:
        df.to_parquet(tmp, index=False)


# --- the run ------------------------------------------------------------------------------------

def score(model_run: str | os.PathLike | Predictor, input: str | os.PathLike, out_csv: str | os.PathLike,
          workers: int = 2, batch_size: int = 16, engine: str = "local", saliency_dir: str | os.PathLike | None = None,
          saliency_method: str = "gradcam", parquet: bool = False, progress: bool = True,
          errors_csv: str | os.PathLike | None = None, device: str = "auto",
          ray_address: str | None = None) -> ScoreSummary:
    """Score every study under ``input`` (folder or manifest CSV) with a trained run into ``out_csv``.

    ``workers`` decode/preprocess in parallel ahead of inference (0: in this process);
    ``batch_size`` studies go through the model at once. ``errors_csv`` defaults to
    ``errors.csv`` beside ``out_csv``. Re-running the same call resumes (see the module
    docstring). Raises :class:`~medtl.errors.MedtlError` only for fatal problems (bad run,
    bad INPUT, an output written by another model); bad studies are counted, not raised.
    """
    t_start = time.perf_counter()
    if engine not in ENGINES:
        raise MedtlError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if batch_size < 1:
        raise MedtlError(f"batch size must be at least 1, got {batch_size}")
    if parquet:
        _check_parquet_support()
    predictor = model_run if isinstance(model_run, Predictor) else Predictor.from_run(model_run, device=device)
    out_csv = Path(out_csv)
    errors_path = Path(errors_csv) if errors_csv else out_csv.with_name("errors.csv")
    if errors_path.resolve() == out_csv.resolve():
        raise MedtlError(f"{out_csv}: the scores and the errors need two different files")
    parquet_path = out_csv.with_suffix(".parquet") if parquet else None
    sal_dir = Path(saliency_dir) if saliency_dir else None
    exclude = [p for p in (out_csv, errors_path, parquet_path, sal_dir) if p is not None]
    found = discover(input, predictor.spatial_dims, exclude=exclude)
    if not found.studies and not found.errors:
        raise MedtlError(f"{input}: no studies found (DICOM, NIfTI, PNG/JPEG/TIFF)")

    out_csv.parent.mkdir(parents=True, exist_ok=True)
    summary = ScoreSummary(found=len(found.studies), ignored=len(found.ignored), out_csv=str(out_csv),
                           errors_csv=str(errors_path), engine=engine, workers=workers,
                           saliency_dir=str(sal_dir) if sal_dir else None)
    lock = _lock(out_csv)
    try:
        columns = score_columns(predictor.class_names)
        done = _recover_scores(out_csv, columns, predictor.model_id)
        _write_fresh(errors_path, ERROR_COLUMNS)
        _score_pending(predictor, found, done, summary, out_csv, errors_path, columns, workers, batch_size, engine,
                       sal_dir, saliency_method, progress, ray_address, (lock.fileno(),))
    finally:
        lock.close()
    if parquet_path is not None:
        _write_parquet(out_csv, parquet_path)
        summary.parquet = str(parquet_path)
    summary.seconds = time.perf_counter() - t_start
    return summary


def _score_pending(predictor: Predictor, found: Discovery, done: set[str], summary: ScoreSummary, out_csv: Path,
                   errors_path: Path, columns: list[str], workers: int, batch_size: int, engine: str,
                   sal_dir: Path | None, saliency_method: str, progress: bool, ray_address: str | None,
                   lock_fds: tuple[int, ...] = ()) -> None:
    scores = _CsvAppender(out_csv, columns)
    errors = _CsvAppender(errors_path, ERROR_COLUMNS)
    try:
        def fail(path: str, key: str, stage: str, reason: str) -> None:
            errors.write([{"path": path, "key": key, "stage": stage, "reason": reason}])
            summary.failed += 1
            if len(summary.failures) < 100:
                summary.failures.append({"path": path, "key": key, "stage": stage, "reason": reason})

        for e in found.errors:
            fail(e.path, e.key, "discover", e.reason)
        pending = [s for s in found.studies if s.key not in done]
        summary.skipped = len(found.studies) - len(pending)
        if pending:
            _run(predictor, pending, summary, scores, fail, workers, batch_size, engine, sal_dir, saliency_method,
                 progress, ray_address, lock_fds)
    finally:
        scores.close()
        errors.close()


def _run(predictor: Predictor, pending: list[Study], summary: ScoreSummary, scores: _CsvAppender, fail: Any,
         workers: int, batch_size: int, engine: str, sal_dir: Path | None, method: str, progress: bool,
         ray_address: str | None, lock_fds: tuple[int, ...] = ()) -> None:
    from tqdm.auto import tqdm

    keep_scan = sal_dir is not None
    if sal_dir is not None:
        sal_dir.mkdir(parents=True, exist_ok=True)
    prep = predictor.preprocessing.to_dict()
    stream = (_local_stream(pending, prep, keep_scan, workers, batch_size, lock_fds) if engine == "local" else
              _ray_stream(pending, prep, keep_scan, workers, batch_size, ray_address))
    buckets: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    bar = tqdm(total=len(pending), unit="study", desc="scoring", disable=not progress, dynamic_ncols=True,
               file=sys.stderr, smoothing=0.1)

    def flush(items: list[dict[str, Any]]) -> None:
        rows = _infer(predictor, items, summary, fail, sal_dir, method)
        scores.write(rows)
        summary.scored += len(rows)
        bar.update(len(items))
        bar.set_postfix(failed=summary.failed, refresh=False)

    try:
        while True:
            t_wait = time.perf_counter()
            item = next(stream, None)
            summary.wait_seconds += time.perf_counter() - t_wait
            if item is None:
                break
            summary.decode_seconds += float(item.get("seconds", 0.0))
            study: Study = item["study"]
            if item["error"] is not None:
                fail(study.path, study.key, "load", item["error"])
                bar.update(1)
                bar.set_postfix(failed=summary.failed, refresh=False)
                continue
            bucket = buckets.setdefault(tuple(item["x"].shape), [])
            bucket.append(item)
            if len(bucket) >= batch_size:
                flush(bucket)
                bucket.clear()
        for bucket in buckets.values():
            if bucket:
                flush(bucket)
    finally:
        stream.close()  # stops the workers (and a Ray started here) even when scoring stops early
        bar.close()


def _infer(predictor: Predictor, items: list[dict[str, Any]], summary: ScoreSummary, fail: Any,
           sal_dir: Path | None, method: str) -> list[dict[str, Any]]:
    """Rows for a batch of preprocessed studies (a batch the model rejects is retried one by one)."""
    t0 = time.perf_counter()
    try:
        probs: list[np.ndarray | None] = list(predictor.predict_batch([it["x"] for it in items]))
    except Exception:  # noqa: BLE001 - isolate the study the model rejects
        probs = []
        for it in items:
            try:
                probs.append(predictor.predict_batch([it["x"]])[0])
            except Exception as exc:  # noqa: BLE001
                fail(it["study"].path, it["study"].key, "infer", one_line(exc))
                probs.append(None)
    summary.infer_seconds += time.perf_counter() - t0
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for it, p in zip(items, probs):
        if p is None:
            continue
        study: Study = it["study"]
        predicted, decision = predictor.decide(p)
        notes = it["notes"]
        if sal_dir is not None:
            t1 = time.perf_counter()
            try:
                scan = it["scan"]
                suffix = ".png" if scan.is_2d else ".nii.gz"
                sal, _ = predictor.saliency(scan, method, target=predictor.class_names.index(decision))
                write_saliency(sal_dir / f"{_safe_stem(study)}{suffix}", scan, sal)
            except Exception as exc:  # noqa: BLE001 - the score stands; the missing map is noted
                notes = "; ".join(filter(None, [notes, f"saliency failed: {one_line(exc, 160)}"]))
            summary.saliency_seconds += time.perf_counter() - t1
        row = {"key": study.key, "path": study.path, "format": it["format"], "series_uid": study.series_uid,
               "shape": it["shape"], "predicted": predicted, "decision": decision,
               "threshold": "" if predictor.threshold is None else f"{predictor.threshold:.6g}",
               "notes": notes, "model": predictor.model_id, "scored_at": now}
        row.update({f"p_{c}": f"{v:.8f}" for c, v in zip(predictor.class_names, p)})
        rows.append(row)
    return rows

