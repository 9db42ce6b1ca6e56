"""Batch scoring: a folder of studies (or a manifest CSV) -> ``scores.csv``, streamed, resumable, safe.

    summary = score("runs/tiny", "incoming/", "scores.csv", workers=2)
    summary.exit_code   # 0: every study scored; 1: some failed (see errors.csv)

How it runs:

- **Discovery** (:mod:`medtl.infer.studies`) lists the studies and their keys; files that
  cannot be studies (unrecognised content, empty folders) go straight to ``errors.csv``.
- **Streaming**: worker processes (:mod:`medtl.infer.isolate`, a wall-clock limit per study;
  or Ray tasks with ``engine="ray"``) decode and preprocess ahead; the main process batches the tensors and
  runs the model. Both engines (:mod:`medtl.infer.engines`) call the same :func:`load_study`,
  and inference always happens in the calling process, so the engines give the same scores.
- **Resumable**: each batch's rows go to ``scores.csv`` in one write, then flush + fsync.
  A re-run reads the file back, drops a trailing partial line a kill may have left (the
  file is rewritten atomically), and skips every key already there: nothing is lost or
  scored twice. A file written by another model is refused rather than mixed.
- **Bad input never stops the batch**: a study that fails (unreadable, wrong
  dimensionality, model error, past the per-study time limit) gets one row in the errors
  file (``scores.csv`` -> ``scores.errors.csv``: path, key, stage, one-line reason). Failed studies are retried by the next run, so ``errors.csv`` is rewritten by
  each run and lists the failures of the latest run that finished (a crashed or interrupted
  run leaves it as it was). The output files, their lock and
  the resume logic are :mod:`medtl.infer.sinks`.
- Saliency maps (``saliency_dir``) are written (atomically) before the study's score row,
  so a resumed run never leaves a scored study without its map. Parquet
  (``scores.parquet``) is written atomically from the CSV at the end.

No patient name or ID is written: rows carry paths, UIDs, probabilities and decisions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtl._fileutil import CANNOT_WRITE, remove_stale_temps
from medtl.errors import MedtlError, one_line
from medtl.infer.engines import ENGINES, check_ray_support, load_study, stream_studies
from medtl.infer.isolate import study_timeout as _study_timeout, warm_up
from medtl.infer.predictor import OOD_WARNING, Predictor, write_saliency
from medtl.infer.sinks import (
    ERROR_COLUMNS,
    AtomicCsv,
    CsvAppender,
    check_ours,
    check_parquet_ours,
    check_writable_folder,
    default_errors_path,
    check_parquet_support,
    lock_output,
    recover_scores,
    saliency_stem,
    score_columns,
    write_parquet,
)
from medtl.infer.studies import Discovery, Study, discover

__all__ = ["ERROR_COLUMNS", "ScoreSummary", "load_study", "score", "score_columns"]


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
    #: what holds for every score of this model (:attr:`Predictor.model_warnings`), also in each row's notes
    model_warnings: list[str] = field(default_factory=list)

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
        return line + "".join(f"\nWARNING: {w}" for w in self.model_warnings)


# --- the run ------------------------------------------------------------------------------------

def score(model_run: str | os.PathLike | Predictor, input: str | os.PathLike, out_csv: str | os.PathLike,
          workers: int = 2, batch_size: int = 16, engine: str = "local", saliency_dir: str | os.PathLike | None = None,
          saliency_method: str | None = None, parquet: bool = False, progress: bool = True,
          errors_csv: str | os.PathLike | None = None, device: str = "auto",
          ray_address: str | None = None, study_timeout: float | None = None,
          allow_other_domain: bool = False) -> ScoreSummary:
    """Score every study under ``input`` (folder or manifest CSV) with a trained run into ``out_csv``.

    ``workers`` decode/preprocess in parallel ahead of inference (0: in this process);
    ``batch_size`` studies go through the model at once. ``errors_csv`` defaults to
    ``<out stem>.errors.csv`` beside ``out_csv`` (``scores.csv`` -> ``scores.errors.csv``); it is
    replaced atomically at the end of a run that finished (not by one that crashed), and never when it
    holds something medtl did not write. ``study_timeout``: per-study wall-clock limit in seconds (default ``MEDTL_STUDY_TIMEOUT``
    or 600; 0: none); a study past it is killed and recorded in the errors file. Re-running the same call resumes (see the module
    docstring). Raises :class:`~medtl.errors.MedtlError` only for fatal problems (bad run,
    bad INPUT, an output written by another model); bad studies are counted, not raised.
    """
    t_start = time.perf_counter()
    if engine not in ENGINES:
        raise MedtlError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if batch_size < 1:
        raise MedtlError(f"batch size must be at least 1, got {batch_size}")
    if parquet:
        check_parquet_support()
    if engine == "ray":
        check_ray_support()
    if engine == "local" and workers > 0:
        warm_up(load_study)  # the workers' fork server imports the readers while the model loads
    predictor = model_run if isinstance(model_run, Predictor) else Predictor.from_run(
        model_run, device=device, allow_other_domain=allow_other_domain)
    out_csv = Path(out_csv)
    if out_csv.is_dir():
        raise MedtlError(f"{out_csv}: is a folder; --out names the scores CSV (e.g. {out_csv / 'scores.csv'})")
    errors_path = Path(errors_csv) if errors_csv else default_errors_path(out_csv)
    if errors_path.resolve() == out_csv.resolve():
        raise MedtlError(f"{out_csv}: the scores and the errors need two different files")
    parquet_path = out_csv.with_suffix(".parquet") if parquet else None
    sal_dir = Path(saliency_dir) if saliency_dir else None
    timeout = _study_timeout(study_timeout)
    # Refuse up front, in one line, what would otherwise fail after the model is loaded.
    for folder, what in ((out_csv.parent, "--out"), (errors_path.parent, "--errors"), (sal_dir, "--saliency-dir")):
        if folder is not None:
            check_writable_folder(folder, what)
    check_ours(errors_path, ERROR_COLUMNS, "--errors")
    if parquet_path is not None:
        check_parquet_ours(parquet_path, score_columns(predictor.class_names))
    exclude = [p for p in (out_csv, errors_path, parquet_path, sal_dir) if p is not None]
    found = discover(input, predictor.spatial_dims, exclude=exclude, progress=progress)
    if not found.studies and not found.errors:
        raise MedtlError(f"{input}: no studies found (DICOM, NIfTI, PNG/JPEG/TIFF)")

    out_csv.parent.mkdir(parents=True, exist_ok=True)
    summary = ScoreSummary(found=len(found.studies), ignored=len(found.ignored), out_csv=str(out_csv),
                           errors_csv=str(errors_path), engine=engine, workers=workers,
                           saliency_dir=str(sal_dir) if sal_dir else None, model_warnings=predictor.model_warnings)
    lock = lock_output(out_csv)
    errors_lock = None
    try:
        errors_lock = lock_output(errors_path, "--errors")  # two runs given one --errors kept only the last's rows
        remove_stale_temps(out_csv.parent, names={out_csv.name})  # a rewrite of it that a kill cut short
        columns = score_columns(predictor.class_names)
        done = recover_scores(out_csv, columns, predictor.model_id)
        _score_pending(predictor, found, done, summary, out_csv, errors_path, columns, workers, batch_size, engine,
                       sal_dir, saliency_method, progress, ray_address, timeout)
    finally:
        if errors_lock is not None:
            errors_lock.close()
        lock.close()
    if parquet_path is not None:
        write_parquet(out_csv, parquet_path)
        summary.parquet = str(parquet_path)
    summary.seconds = time.perf_counter() - t_start
    return summary


def _score_pending(predictor: Predictor, found: Discovery, done: set[str], summary: ScoreSummary, out_csv: Path,
                   errors_path: Path, columns: list[str], workers: int, batch_size: int, engine: str,
                   sal_dir: Path | None, saliency_method: str, progress: bool, ray_address: str | None,
                   timeout: float | None = None) -> None:
    scores = CsvAppender(out_csv, columns)
    errors = AtomicCsv(errors_path, ERROR_COLUMNS)  # replaces the errors file only when the run finishes
    finished = False
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
                 progress, ray_address, timeout)
        scores.close()
        errors.close()
        finished = True
    finally:
        if not finished:  # a crash or Ctrl-C: the last finished run's errors file stays as it was
            with contextlib.suppress(OSError):
                scores.close()
            errors.abandon()


def _run(predictor: Predictor, pending: list[Study], summary: ScoreSummary, scores: CsvAppender, fail: Any,
         workers: int, batch_size: int, engine: str, sal_dir: Path | None, method: str, progress: bool,
         ray_address: str | None, timeout: float | None = None) -> None:
    from tqdm.auto import tqdm

    keep_scan = sal_dir is not None
    if sal_dir is not None:
        sal_dir.mkdir(parents=True, exist_ok=True)
    prep = predictor.preprocessing.to_dict()
    stream = stream_studies(engine, pending, prep, keep_scan, workers, batch_size, ray_address, timeout)
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
    """Rows for a batch of preprocessed studies (a batch the model rejects is retried one by one).

    A study whose header contradicts the model card's training domain goes to the errors file
    (stage ``domain``) unless the predictor allows other domains; every row carries the
    out-of-distribution score and flag (empty for model cards without them).
    """
    kept, checks = [], []
    for it in items:
        header = it.get("header") or {}
        try:
            checks.append(predictor.check_header(header.get("modality"), header.get("kind", "gray"),
                                                 it["study"].path, header.get("photometric", ""),
                                                 blank=bool(header.get("blank"))))
            kept.append(it)
        except MedtlError as exc:
            fail(it["study"].path, it["study"].key, "domain", one_line(exc))
    items = kept
    t0 = time.perf_counter()
    results: list[tuple[np.ndarray, float | None] | None] = []
    try:
        probs, scores = predictor.score_batch([it["x"] for it in items]) if items else ([], None)
        results = [(p, None if scores is None else float(s)) for p, s in
                   zip(probs, scores if scores is not None else [None] * len(items))]
    except Exception:  # noqa: BLE001 - isolate the study the model rejects
        for it in items:
            try:
                p1, s1 = predictor.score_batch([it["x"]])
                results.append((p1[0], None if s1 is None else float(s1[0])))
            except Exception as exc:  # noqa: BLE001
                fail(it["study"].path, it["study"].key, "infer", one_line(exc))
                results.append(None)
    summary.infer_seconds += time.perf_counter() - t0
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_notes = summary.model_warnings
    rows = []
    for it, res, checked in zip(items, results, checks):
        if res is None:
            continue
        p, ood = res
        study: Study = it["study"]
        try:
            predicted, decision = predictor.decide(p)
        except MedtlError as exc:
            fail(study.path, study.key, "infer", one_line(exc))
            continue
        flagged = predictor.is_out_of_distribution(ood)
        notes = "; ".join(filter(None, [*model_notes, it["notes"], *(n for n in checked if "override" in n)]))
        if sal_dir is not None:
            t1 = time.perf_counter()
            try:
                scan = it["scan"]
                suffix = ".png" if scan.is_2d else ".nii.gz"
                sal, info = predictor.saliency(scan, method, target=predictor.class_names.index(decision),
                                               probabilities=p)
                write_saliency(sal_dir / f"{saliency_stem(study)}{suffix}", scan, sal,
                               warning=OOD_WARNING if flagged else "")
                notes = "; ".join(filter(None, [notes, info.get("note")]))
            except Exception as exc:  # noqa: BLE001 - the score stands; the missing map is noted
                if isinstance(exc, OSError) and exc.errno in CANNOT_WRITE:
                    raise  # a full disk: stop, so that resuming once there is room writes this study's map
                notes = "; ".join(filter(None, [notes, f"saliency failed: {one_line(exc, 160)}"]))
            summary.saliency_seconds += time.perf_counter() - t1
        row = {"key": study.key, "path": study.path, "format": it["format"], "series_uid": study.series_uid,
               "shape": it["shape"], "predicted": predicted, "decision": decision,
               "threshold": "" if predictor.threshold is None else f"{predictor.threshold:.6g}",
               "ood_score": "" if ood is None else f"{ood:.6g}", "ood_flag": "" if flagged is None else int(flagged),
               "notes": notes, "model": predictor.model_id, "scored_at": now}
        row.update({f"p_{c}": repr(float(v)) for c, v in zip(predictor.class_names, p)})  # exact float: no ties at p near 1
        rows.append(row)
    return rows

