"""Pull -> score -> push, on a work folder that makes every step resumable:

    WORK/incoming/<StudyUID>/<SeriesUID>/<SOPUID>.dcm   retrieved instances (pull skips those present)
    WORK/scores.csv    one row per scored study: medtl.infer.score's file (resume: nothing scored twice)
    WORK/errors.csv    what failed in the latest run: pull, discover, load, infer, push (one line each)
    WORK/pushed.csv    one row per study whose results are in the PACS (push skips those)

Scoring is :func:`medtl.infer.score` on ``WORK/incoming`` (the same study grouping, resume and
error rows as a folder). Pushing builds, per scored DICOM study, the SR + Secondary Capture +
saliency SEG of :mod:`medtl.pacs.results` and stores them by STOW-RS or C-STORE. Result UIDs are
deterministic, so a push interrupted between the store and its ledger row stores the same objects
again (the PACS keeps one copy). Rows and log lines carry UIDs, never patient names or IDs.
"""

from __future__ import annotations

import csv
import datetime as _dt
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medtl._fileutil import hold_lock
from medtl.errors import MedtlError, one_line
from medtl.pacs.config import PacsConfig, PacsError, redact
from medtl.pacs.query import Query, SeriesRef

__all__ = ["PULL_VIA", "PUSHED_COLUMNS", "PacsRunSummary", "connect", "find", "pacs_score", "pull", "push_scored"]

log = logging.getLogger("medtl.pacs")

PULL_VIA = ("dicomweb", "cget", "cmove")
PUSHED_COLUMNS = ["key", "study_uid", "source_series_uid", "sr_uid", "sc_uid", "seg_uid", "via", "pushed_at"]


@dataclass
class PacsRunSummary:
    """Counts and timings of a pull/score/push run (``medtl pacs score``, the listener, the benchmark)."""

    series: int = 0
    pulled: int = 0
    already_here: int = 0
    pull_failed: int = 0
    scored: int = 0
    skipped: int = 0
    failed: int = 0
    pushed: int = 0
    already_pushed: int = 0
    push_failed: int = 0
    pull_seconds: float = 0.0
    score_seconds: float = 0.0
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    push_seconds: float = 0.0
    saliency_seconds: float = 0.0
    build_seconds: float = 0.0
    store_seconds: float = 0.0
    errors_csv: str = ""
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if (self.failed or self.pull_failed or self.push_failed) else 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exit_code"] = self.exit_code
        return out

    def text(self) -> str:
        lines = [f"pulled {self.pulled} instance(s) of {self.series} series ({self.already_here} already here, "
                 f"{self.pull_failed} series failed) in {self.pull_seconds:.1f} s",
                 f"scored {self.scored}, skipped {self.skipped} (already scored), failed {self.failed} in "
                 f"{self.score_seconds:.1f} s",
                 f"pushed results of {self.pushed} stud{'y' if self.pushed == 1 else 'ies'} "
                 f"({self.already_pushed} already pushed, {self.push_failed} failed) in {self.push_seconds:.1f} s"]
        if self.exit_code:
            lines.append(f"failures written to {self.errors_csv}")
        return "\n".join(lines)


# --- connections ---------------------------------------------------------------------------------

def connect(config: PacsConfig, via: str) -> Any:
    """The client for ``via``: ``dicomweb`` (QIDO/WADO/STOW) or ``dimse``/``cget``/``cmove`` (C-FIND/...)."""
    if via == "dicomweb":
        from medtl.pacs.dicomweb import DicomWebPacs

        return DicomWebPacs(config)
    if via in ("dimse", "cget", "cmove"):
        from medtl.pacs.dimse import DimsePacs

        return DimsePacs(config)
    raise MedtlError(f"unknown PACS protocol {via!r}; use dicomweb, cget or cmove")


def find(config: PacsConfig, query: Query, via: str = "dicomweb") -> list[SeriesRef]:
    return connect(config, "dicomweb" if via == "dicomweb" else "dimse").find(query)


# --- pull ----------------------------------------------------------------------------------------

def private_folder(path: str | os.PathLike) -> Path:
    """``path`` made (with its parents) if missing, the folder itself readable by this user only: it receives
    whole studies from the PACS, patient names and all, and ``--work /tmp/x`` must not show them to every
    local user. A folder that exists keeps its permissions (a team may share one on purpose)."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def pull(config: PacsConfig, query: Query, dest: str | os.PathLike, via: str = "dicomweb",
         summary: PacsRunSummary | None = None, failures: list[dict[str, str]] | None = None) -> PacsRunSummary:
    """Retrieve every series matching ``query`` into ``dest`` (resumable). A series that fails is one
    row in ``failures`` (the run goes on); an unreachable PACS or refused credentials raise."""
    if via not in PULL_VIA:
        raise MedtlError(f"unknown retrieve method {via!r}; use one of {', '.join(PULL_VIA)}")
    summary = summary or PacsRunSummary()
    failures = failures if failures is not None else []
    t0 = time.perf_counter()
    client = connect(config, via)
    refs = [r for r in client.find(query) if not r.description.startswith("medtl:")]  # never our own results
    summary.series += len(refs)
    private_folder(dest)
    scp = None
    if via == "cmove":  # one storage SCP for the whole pull
        from medtl.pacs.dimse import StorageSCP

        scp = StorageSCP(dest, config.calling_aet, config.listen_host, config.listen_port).start()
    try:
        for ref in refs:
            try:
                if via == "dicomweb":
                    written, present = client.retrieve(ref, dest)
                elif via == "cget":
                    written, present = client.get(ref, dest)
                else:
                    before = scp.received
                    written, present = client.move(ref, dest, scp=scp)
                    written = scp.received - before
            except PacsError as exc:
                text = str(exc)
                if exc.fatal:
                    raise
                summary.pull_failed += 1
                failures.append({"path": str(Path(dest) / ref.study_uid / ref.series_uid), "key": f"series:{ref.series_uid}",
                                 "stage": "pull", "reason": redact(text, config)})
                continue
            summary.pulled += written
            summary.already_here += present
    finally:
        if scp is not None:
            scp.stop()
    summary.pull_seconds += time.perf_counter() - t0
    return summary


# --- push ----------------------------------------------------------------------------------------

def _read_rows(path: Path) -> list[dict[str, str]]:
    from medtl.infer.sinks import read_cell

    if not path.is_file():
        return []
    raw = path.read_bytes()
    text = raw[: raw.rfind(b"\n") + 1].decode("utf-8", errors="replace")
    rows = ({k: read_cell(v or "") for k, v in r.items()} for r in csv.DictReader(text.splitlines()))
    return [r for r in rows if r.get("key")]


def pushed_keys(work: str | os.PathLike) -> set[str]:
    return {r["key"] for r in _read_rows(Path(work) / "pushed.csv") if r.get("pushed_at")}


def _source_files(row: dict[str, str]) -> list[str]:
    path = Path(row["path"])
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        import pydicom

        uid = row.get("series_uid", "")
        files = []
        for f in sorted(path.iterdir()):
            if f.suffix == ".dcm" and not f.name.startswith("."):
                if not uid or str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
                                   .get("SeriesInstanceUID", "")) == uid:
                    files.append(str(f))
        return files
    raise MedtlError(f"{path}: the scored study is no longer in the work folder (`medtl listen` deletes what it "
                     "received once the results are pushed): pull it again with `medtl pacs score`, and run "
                     "`medtl listen --keep-incoming` to push other results of a study later")


def _load(row: dict[str, str], files: list[str]) -> Any:
    from medtl.io import load_scan
    from medtl.io.dicom import read_series

    if Path(row["path"]).is_file():
        return load_scan(row["path"])
    return read_series(files, series=row.get("series_uid") or None, progress=False)


#: Values of the source that identify the patient, the hospital or its staff: never in an error line medtl writes.
_IDENTIFYING = ("PatientName", "PatientID", "AccessionNumber", "PatientBirthDate", "PatientBirthTime",
                "OtherPatientIDs", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator", "IssuerOfPatientID",
                "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
                "NameOfPhysiciansReadingStudy", "OperatorsName")


def _scrub(text: str, sources: list[Any]) -> str:
    """Blank a patient identifier (name, ID, birth date ...), the institution or a physician's name (each
    value of a multi-valued one) that a library message might quote."""
    from pydicom.multival import MultiValue

    from medtl.pacs.results import quiet_pydicom

    for ds in sources[:1]:
        with quiet_pydicom():  # reading an invalid value warns and logs with the value in the message
            found = {attr: ds.get(attr, "") for attr in _IDENTIFYING}
        for attr, value in found.items():
            for v in [str(value), *(map(str, value) if isinstance(value, MultiValue) else [])]:
                if len(v) >= 3:
                    text = text.replace(v, f"<{attr}>")
    return text


def _ood_of(row: dict[str, str], predictor: Any) -> tuple[float, float | None, bool] | None:
    """``(score, threshold, flagged)`` of a ``scores.csv`` row (``None`` for a model without the check)."""
    if not row.get("ood_score"):
        return None
    ood = getattr(predictor, "ood", None)
    threshold = float(ood.thresholds[predictor.ood_method]) if ood is not None else None
    return float(row["ood_score"]), threshold, str(row.get("ood_flag", "")).strip() in ("1", "True", "true")


def push_scored(predictor: Any, config: PacsConfig, work: str | os.PathLike, via: str | None = None,
                method: str | None = None, keys: set[str] | None = None, summary: PacsRunSummary | None = None,
                failures: list[dict[str, str]] | None = None, saliency: bool = True) -> PacsRunSummary:
    """Build and store the results of every scored study in ``WORK/scores.csv`` not yet in
    ``WORK/pushed.csv`` (only ``keys`` when given), with saliency ``method`` (default: medtl's; results
    of another method are other objects, :func:`~medtl.pacs.results.result_key`). The model's
    training-domain checks run here: a study the model was not trained for gets an error row instead
    of a report, unless the predictor was made with ``allow_other_domain``."""
    from medtl.explain import DEFAULT_METHOD

    method = method or DEFAULT_METHOD
    work = Path(work).resolve()
    summary = summary or PacsRunSummary()
    failures = failures if failures is not None else []
    via = via or config.push
    client = connect(config, "dicomweb" if via == "dicomweb" else "dimse")
    # One push at a time per work folder (a listener and `medtl pacs push`, or two pushes, sent every
    # result twice): the second waits, then reads what the first pushed.
    lock = hold_lock(work / ".pushed.csv.lock", wait=True)
    try:
        return _push_locked(predictor, client, config, work, via, method, keys, summary, failures, saliency)
    finally:
        lock.close()


def _push_locked(predictor: Any, client: Any, config: PacsConfig, work: Path, via: str, method: str,
                 keys: set[str] | None, summary: PacsRunSummary, failures: list[dict[str, str]],
                 saliency: bool) -> PacsRunSummary:
    """:func:`push_scored` with the work folder's push lock held."""
    from medtl.infer.predictor import OOD_MESSAGE
    from medtl.infer.sinks import CsvAppender
    from medtl.pacs.results import build_results, read_sources, result_key

    done = pushed_keys(work)
    rows = [r for r in _read_rows(work / "scores.csv") if keys is None or r["key"] in keys]
    ledger_path = work / "pushed.csv"
    if not ledger_path.exists() or ledger_path.stat().st_size == 0:
        from medtl.infer.sinks import write_fresh

        write_fresh(ledger_path, PUSHED_COLUMNS)
    ledger = CsvAppender(ledger_path, PUSHED_COLUMNS)
    t0 = time.perf_counter()
    try:
        for row in rows:
            key = result_key(row["key"], method)
            if key in done:
                summary.already_pushed += 1
                continue
            if row.get("format") != "dicom":
                continue
            sources: list[Any] = []
            try:
                t1 = time.perf_counter()
                files = _source_files(row)
                sources = read_sources(files)
                scan = _load(row, files)
                notes = predictor.check(scan)
                probs = {c: float(row[f"p_{c}"]) for c in predictor.class_names}
                sal = None
                if saliency:
                    ts = time.perf_counter()
                    sal, _ = predictor.saliency(scan, method, target=predictor.class_names.index(row["decision"]))
                    summary.saliency_seconds += time.perf_counter() - ts
                threshold = float(row["threshold"]) if row.get("threshold") else None
                ood = _ood_of(row, predictor)
                if ood is not None and ood[2]:
                    notes = [OOD_MESSAGE, *notes]
                results = build_results(sources, key=key, probabilities=probs, decision=row["decision"],
                                        threshold=threshold, card=predictor.card, model_id=predictor.model_id,
                                        scan=scan, saliency=sal, method=method, ood=ood,
                                        notes="; ".join(filter(None, [*notes, row.get("notes", "")])))
                summary.build_seconds += time.perf_counter() - t1
                t2 = time.perf_counter()
                client.store(results.datasets)
                summary.store_seconds += time.perf_counter() - t2
            except PacsError as exc:
                if exc.fatal:
                    raise
                summary.push_failed += 1
                failures.append({"path": row["path"], "key": row["key"], "stage": "push",
                                 "reason": _scrub(redact(str(exc), config), sources)})
                continue
            except Exception as exc:  # noqa: BLE001 - one study's results must not stop the others
                summary.push_failed += 1
                failures.append({"path": row["path"], "key": row["key"], "stage": "push",
                                 "reason": _scrub(redact(one_line(exc), config), sources)})
                continue
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            ledger.write([{"key": key, "study_uid": str(sources[0].StudyInstanceUID),
                           "source_series_uid": str(sources[0].SeriesInstanceUID), "sr_uid": results.sr.SOPInstanceUID,
                           "sc_uid": getattr(results.sc, "SOPInstanceUID", ""),
                           "seg_uid": getattr(results.seg, "SOPInstanceUID", ""), "via": via, "pushed_at": now}])
            summary.pushed += 1
            log.info("pushed results of %s to study %s", row["key"], sources[0].StudyInstanceUID)
    finally:
        ledger.close()
    summary.push_seconds += time.perf_counter() - t0
    return summary


def check_errors_file(path: Path, option: str = "--work") -> None:
    """Refuse, before any work, an errors file medtl did not write where a run would append its failures
    (its last line cut, rows added): a user's ``errors.csv`` in the folder is never changed."""
    from medtl.infer.sinks import ERROR_COLUMNS, check_ours

    check_ours(path, ERROR_COLUMNS, option)


def append_errors(path: Path, failures: list[dict[str, str]], option: str = "--work") -> None:
    """Append ``failures`` to the errors file ``path`` (made with its header when missing; refused when
    medtl did not write it, ``option`` naming the choice to change)."""
    if not failures:
        return
    from medtl.infer.sinks import ERROR_COLUMNS, CsvAppender, write_fresh

    check_errors_file(path, option)
    if not path.exists() or path.stat().st_size == 0:
        write_fresh(path, ERROR_COLUMNS)
    out = CsvAppender(path, ERROR_COLUMNS)
    try:
        out.write(failures)
    finally:
        out.close()


# --- the whole run -------------------------------------------------------------------------------

def pacs_score(predictor: Any, config: PacsConfig, query: Query, work: str | os.PathLike, via: str = "dicomweb",
               push: bool = True, push_via: str | None = None, method: str | None = None, workers: int = 0,
               batch_size: int = 16, progress: bool = False, pull_first: bool = True) -> PacsRunSummary:
    """Pull what ``query`` matches into ``WORK/incoming``, score it (resumable), push the results."""
    from medtl.infer import score

    work = Path(work).resolve()  # scores.csv keeps absolute paths: a later run from elsewhere finds the studies
    check_errors_file(work / "errors.csv")
    incoming = private_folder(work / "incoming")
    summary = PacsRunSummary(errors_csv=str(work / "errors.csv"))
    failures: list[dict[str, str]] = []
    if pull_first:
        pull(config, query, incoming, via=via, summary=summary, failures=failures)
    if not any(incoming.rglob("*.dcm")):
        append_errors(work / "errors.csv", failures)
        summary.failures = failures[:100]
        raise MedtlError(f"nothing to score: no instance matches {query.describe()} on the PACS")
    t0 = time.perf_counter()
    try:
        s = score(predictor, incoming, work / "scores.csv", workers=workers, batch_size=batch_size,
                  progress=progress, errors_csv=work / "errors.csv")
    except BaseException:  # a crash or Ctrl-C while scoring keeps the pull's failures (appended after score's)
        append_errors(work / "errors.csv", failures)
        raise
    summary.score_seconds += time.perf_counter() - t0
    summary.scored, summary.skipped, summary.failed = s.scored, s.skipped, s.failed
    summary.decode_seconds += s.decode_seconds
    summary.infer_seconds += s.infer_seconds
    summary.failures = list(s.failures)
    if push:
        try:
            push_scored(predictor, config, work, via=push_via, method=method, summary=summary, failures=failures)
        finally:
            append_errors(work / "errors.csv", failures)
    else:
        append_errors(work / "errors.csv", failures)
    summary.failures += failures
    return summary
