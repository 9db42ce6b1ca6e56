"""``medtl listen``: a DICOM storage SCP that scores each study once it is complete and sends the
results back.

A PACS (routing rule) or a modality sends studies to medtl's AE title. Each instance is written
atomically to ``WORK/incoming/<StudyUID>/<SeriesUID>/<SOPUID>.dcm``; a study is *complete* when no
new instance has arrived for ``settle`` seconds. It is then scored with :func:`medtl.infer.score`
(into the shared ``WORK/scores.csv``) and its results are pushed (:func:`medtl.pacs.workflow.push_scored`).

Restart-safe: everything is on disk. After a kill (even SIGKILL) and a restart, every study in
``WORK/incoming`` is looked at again once it has settled: ``score`` skips the keys already in
``scores.csv`` and the push skips those in ``pushed.csv`` (result UIDs are deterministic besides),
so nothing is lost, nothing is scored twice and no result is stored twice. ``WORK/studies.csv``
records studies fully done (with their instance count) so a restart does not even re-read them.
Objects medtl itself wrote (its SR/SC/SEG routed back) are acknowledged and dropped.

Retention: once a study is done with nothing failed and every result pushed, its received instances
are deleted (patient data, and a CT study a few hundred MB: a listener that runs for months would fill
its disk); ``keep_incoming`` keeps them. A study with a failure, or scored without pushing (its results
are built from the instances, by ``medtl pacs push``), keeps them.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from medtl.errors import one_line
from medtl.pacs.config import PacsConfig, PacsError, redact

__all__ = ["Listener"]

log = logging.getLogger("medtl.pacs")
STUDY_COLUMNS = ["study_uid", "instances", "scored", "failed", "pushed", "push_failed", "done_at"]


class Listener:
    """Receive, wait for completion, score, push. :meth:`run` blocks until SIGINT/SIGTERM or :meth:`stop`."""

    def __init__(self, predictor: Any, config: PacsConfig, work: str | Path, settle: float = 10.0, push: bool = True,
                 method: str | None = None, poll: float = 0.5, retry_push: float = 30.0,
                 keep_incoming: bool = False) -> None:
        self.predictor = predictor
        self.config = config
        self.work = Path(work).resolve()  # the same folder given another way is the same work (scores.csv paths)
        self.incoming = self.work / "incoming"
        self.settle = float(settle)
        self.push = push
        self.method = method
        self.poll = poll
        self.retry_push = retry_push
        self.keep_incoming = keep_incoming
        self.last_seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.scp: Any = None
        self.processed = 0

    # --- bookkeeping -------------------------------------------------------------------------

    def _done(self) -> dict[str, int]:
        path = self.work / "studies.csv"
        if not path.is_file():
            return {}
        raw = path.read_bytes()
        text = raw[: raw.rfind(b"\n") + 1].decode("utf-8", errors="replace")
        return {r["study_uid"]: int(r["instances"]) for r in csv.DictReader(text.splitlines())
                if r.get("done_at") and r.get("instances", "").isdigit()}

    def _files(self, study_uid: str) -> list[Path]:
        """The study's received instances (not the hidden files of a write still going on)."""
        return [p for p in (self.incoming / study_uid).rglob("*.dcm") if not p.name.startswith(".")]

    def _count(self, study_uid: str) -> int:
        return len(self._files(study_uid))

    def _delete_received(self, files: list[Path], study_uid: str) -> None:
        """Delete ``files`` (the instances a done study was scored on), then the folders they leave empty:
        an instance arriving meanwhile is another file, so it stays and makes the study due again."""
        for f in files:
            f.unlink(missing_ok=True)
        folder = self.incoming / study_uid
        for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: something arrived
                d.rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()

    def _mark_done(self, row: dict[str, Any]) -> None:
        from medtl.infer.sinks import CsvAppender, write_fresh

        path = self.work / "studies.csv"
        if not path.exists() or path.stat().st_size == 0:
            write_fresh(path, STUDY_COLUMNS)
        out = CsvAppender(path, STUDY_COLUMNS)
        try:
            out.write([row])
        finally:
            out.close()

    def _arrived(self, path: Path, ds: Any, written: bool) -> None:
        with self.lock:
            self.last_seen[str(ds.StudyInstanceUID)] = time.monotonic()

    @staticmethod
    def _accept(ds: Any) -> bool:
        from medtl.pacs.results import is_medtl_result

        if is_medtl_result(ds):
            log.info("ignored medtl's own result object in study %s", ds.get("StudyInstanceUID", "?"))
            return False
        return True

    # --- one study ---------------------------------------------------------------------------

    def process(self, study_uid: str) -> None:
        """Score and push one complete study (safe to call again: resumes)."""
        from medtl.infer import score
        from medtl.pacs.workflow import PacsRunSummary, append_errors, push_scored

        n = self._count(study_uid)
        if n == 0:  # an instance sent again while its study's files were being deleted: the deletion took it
            with self.lock:
                if self._count(study_uid) == 0:
                    self.last_seen.pop(study_uid, None)
                    return
            n = self._count(study_uid)
        folder = self.incoming / study_uid
        errors = self.work / "errors" / f"{study_uid}.csv"
        errors.parent.mkdir(parents=True, exist_ok=True)
        s = score(self.predictor, folder, self.work / "scores.csv", workers=0, progress=False, errors_csv=errors)
        # score's lock beside this study's own errors file: one hidden file per study would pile up in errors/
        errors.with_name(f".{errors.name}.lock").unlink(missing_ok=True)
        here = [r for r in _rows(self.work / "scores.csv") if r["path"].startswith(str(folder) + os.sep)]
        self._warn_if_scored_early(study_uid, here)
        summary = PacsRunSummary(scored=s.scored, skipped=s.skipped, failed=s.failed)
        failures: list[dict[str, str]] = []
        all_pushed = False
        if self.push:
            rows_here = {r["key"] for r in here}
            try:
                push_scored(self.predictor, self.config, self.work, method=self.method, keys=rows_here,
                            summary=summary, failures=failures)
            except PacsError as exc:  # PACS down: keep the study pending, retry later
                log.warning("study %s: results not pushed (%s); will retry", study_uid, redact(str(exc), self.config))
                append_errors(errors, [{"path": str(folder), "key": f"study:{study_uid}", "stage": "push",
                                        "reason": redact(str(exc), self.config)}])
                with self.lock:
                    self.last_seen[study_uid] = time.monotonic() + self.retry_push - self.settle
                return
            append_errors(errors, failures)
            all_pushed = not failures and summary.push_failed == 0
        _drop_if_empty(errors)
        log.info("study %s: %d instance(s); scored %d, skipped %d, failed %d; pushed %d, push failed %d",
                 study_uid, n, s.scored, s.skipped, s.failed, summary.pushed, summary.push_failed)
        print(f"study {study_uid}: scored {s.scored}, skipped {s.skipped}, failed {s.failed}, "
              f"pushed {summary.pushed}{f', see {errors}' if errors.exists() else ''}", flush=True)
        with self.lock:
            files = self._files(study_uid)
            if len(files) == n:  # nothing new arrived meanwhile
                self.last_seen.pop(study_uid, None)
                self._mark_done({"study_uid": study_uid, "instances": n, "scored": s.scored, "failed": s.failed,
                                 "pushed": summary.pushed, "push_failed": summary.push_failed,
                                 "done_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
                if all_pushed and s.failed == 0 and not errors.exists() and not self.keep_incoming:
                    self._delete_received(files, study_uid)
        self.processed += 1

    def _warn_if_scored_early(self, study_uid: str, rows: list[dict[str, str]]) -> None:
        """Say so when a series scored as a volume (one of the study's ``scores.csv`` ``rows``) has more
        instances now than it had slices then: it arrived in two bursts further apart than ``settle``, and
        its results cover the first one only (a series is scored once: its result UIDs must keep meaning
        one content)."""
        for r in rows:
            if not r["key"].startswith("series:"):
                continue
            slices = r.get("shape", "").split("x")
            have = sum(1 for p in Path(r["path"]).glob("*.dcm") if not p.name.startswith("."))
            if len(slices) == 3 and slices[2].isdigit() and have > int(slices[2]):
                msg = (f"study {study_uid}: series {r['series_uid']} has {have} instances now but was scored on "
                       f"{slices[2]}: the rest came more than --settle {self.settle:g} s later, so its results cover "
                       "the first part only (raise --settle above the longest pause of the modality)")
                log.warning(msg)
                print(f"WARNING: {msg}", flush=True)

    # --- the loop ----------------------------------------------------------------------------

    def recover(self) -> int:
        """Studies left unfinished by an earlier run (killed): due again after ``settle`` seconds."""
        done = self._done()
        now = time.monotonic()
        pending = 0
        if self.incoming.is_dir():
            for d in sorted(p for p in self.incoming.iterdir() if p.is_dir() and not p.name.startswith(".")):
                count = self._count(d.name)
                if count and done.get(d.name) != count:  # 0: what a deletion cut short left, nothing to score
                    self.last_seen[d.name] = now
                    pending += 1
        return pending

    def start(self) -> "Listener":
        from medtl.pacs.dimse import StorageSCP
        from medtl.pacs.workflow import private_folder

        private_folder(self.incoming)
        pending = self.recover()
        self.scp = StorageSCP(self.incoming, self.config.calling_aet, self.config.listen_host,
                              self.config.listen_port, on_instance=self._arrived, accept=self._accept).start()
        print(f"listening as {self.config.calling_aet} on {self.config.listen_host}:{self.config.listen_port}; "
              f"a study is scored {self.settle:g} s after its last instance; work folder {self.work}"
              f"{f'; {pending} unfinished stud(ies) from an earlier run' if pending else ''}", flush=True)
        return self

    def step(self) -> int:
        """Process the studies that have settled; how many were processed."""
        now = time.monotonic()
        with self.lock:
            due = sorted(uid for uid, t in self.last_seen.items() if now - t >= self.settle)
        for uid in due:
            if self.stopping.is_set():
                break
            try:
                self.process(uid)
            except Exception as exc:  # noqa: BLE001 - one study must not stop the listener
                log.error("study %s failed: %s", uid, redact(one_line(exc), self.config))
                print(f"study {uid}: failed: {redact(one_line(exc), self.config)}", flush=True)
                with self.lock:
                    self.last_seen[uid] = time.monotonic() + self.retry_push - self.settle
        return len(due)

    def run(self, max_seconds: float | None = None) -> int:
        """Serve until SIGINT/SIGTERM (or ``max_seconds``); returns 0."""
        self.start()
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, lambda *_: self.stopping.set())
        t_end = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self.stopping.is_set() and (t_end is None or time.monotonic() < t_end):
                self.step()
                self.stopping.wait(self.poll)
        finally:
            self.stop()
            for sig, h in handlers.items():
                signal.signal(sig, h)
        print("listener stopped", flush=True)
        return 0

    def stop(self) -> None:
        self.stopping.set()
        if self.scp is not None:
            self.scp.stop()
            self.scp = None


def _drop_if_empty(path: Path) -> None:
    """Remove a study's errors file that holds the header alone (nothing failed): one file per study received
    would otherwise pile up in ``WORK/errors`` for as long as the listener runs."""
    from medtl.infer.sinks import ERROR_COLUMNS

    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return
    if len(lines) == 1 and lines[0].decode("utf-8", errors="replace").split(",") == ERROR_COLUMNS:
        path.unlink(missing_ok=True)


def _rows(path: Path) -> list[dict[str, str]]:
    from medtl.pacs.workflow import _read_rows

    return _read_rows(path)
