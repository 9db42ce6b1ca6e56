"""Decoding engines: a list of studies -> a stream of read and preprocessed items.

Every engine runs the same :func:`load_study` on each study, so they give the same
network inputs; only where the work happens differs:

- ``"local"``: worker processes of :mod:`medtl.infer.isolate` (or this process with
  ``workers=0``), results in study order, each study under a wall-clock limit.
- ``"ray"``: Ray tasks (a local Ray, or a cluster), results in completion order, a bounded
  number in flight.

Inference is never done here: :func:`medtl.infer.score` batches the items and runs the
model in the calling process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
import warnings
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from medtl.errors import MedtlError, one_line
from medtl.guard.domain import is_blank, photometric_kind
from medtl.infer.studies import Study
from medtl.transforms import Preprocessing

__all__ = ["ENGINES", "check_ray_support", "load_study", "local_stream", "ray_stream", "stream_studies"]

#: Engines accepted by :func:`stream_studies` (and ``medtl score --engine``).
ENGINES = ("local", "ray")

#: One decoded study: ``{"study", "x", "error", "format", "shape", "notes", "scan", "seconds"}``.
Item = dict[str, Any]

_PREP_CACHE: dict[str, Preprocessing] = {}


def _prep_of(prep: Preprocessing | dict[str, Any]) -> Preprocessing:
    """The pipeline of a preprocessing dict, built once per process (workers receive dicts)."""
    if isinstance(prep, Preprocessing):
        return prep
    key = repr(sorted(prep.items()))
    if key not in _PREP_CACHE:
        _PREP_CACHE[key] = Preprocessing.from_dict(prep)
    return _PREP_CACHE[key]


def load_study(study: Study, prep: Preprocessing | dict[str, Any], keep_scan: bool = False) -> Item:
    """Read and preprocess one study; never raises on bad input.

    Returns ``{"study", "x" (numpy network input or None), "error" (one line or None),
    "format", "shape", "notes" (medtl warnings, e.g. missing slices), "scan" (when
    ``keep_scan``), "seconds"}``.
    """
    t0 = time.perf_counter()
    out: Item = {"study": study, "x": None, "error": None, "format": "", "shape": "", "notes": "", "scan": None}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scan = study.load()
            x = _prep_of(prep)(scan)
        out["x"] = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        out["format"] = scan.format
        out["shape"] = "x".join(str(s) for s in scan.shape)
        # header facts for the training-domain check in the main process (medtl.guard.domain)
        out["header"] = {"modality": scan.modality, "kind": photometric_kind(scan), "photometric": scan.photometric,
                         "blank": is_blank(scan)}
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


def stream_studies(engine: str, studies: Sequence[Study], prep: dict[str, Any], keep_scan: bool, workers: int,
                   batch_size: int, ray_address: str | None = None,
                   timeout: float | None = None) -> Generator[Item, None, None]:
    """The items of ``studies`` from ``engine``; closing the generator stops its workers.

    ``timeout`` is the per-study wall-clock limit in seconds (None: none): a study past it
    becomes an error item.
    """
    if engine == "local":
        return local_stream(studies, prep, keep_scan, workers, batch_size, timeout)
    if engine == "ray":
        return ray_stream(studies, prep, keep_scan, workers, batch_size, ray_address, timeout)
    raise MedtlError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")


# --- local: isolated worker processes -------------------------------------------------------------

def local_stream(studies: Sequence[Study], prep: dict[str, Any], keep_scan: bool, workers: int,
                 batch_size: int, timeout: float | None = None) -> Generator[Item, None, None]:
    """Items in study order from ``workers`` processes (0: decoded in this process).

    Each worker reads one study at a time (see :mod:`medtl.infer.isolate`): a study running
    past ``timeout`` seconds has its worker killed and replaced and becomes an error item, so
    one stuck decode never stalls the ordered stream; a worker that dies fails only its study.
    """
    from medtl.infer.isolate import in_process_stream, isolated_stream

    if workers <= 0:
        yield from in_process_stream(studies, load_study, (prep, keep_scan), timeout)
        return
    # Not a torch DataLoader: its workers cannot be stopped one at a time, so one stuck
    # study would stall every later one (its timeout= aborts the whole loader).
    ahead = max(2 * workers, batch_size)
    yield from isolated_stream(studies, load_study, (prep, keep_scan), workers, timeout, ahead)


# --- Ray tasks ------------------------------------------------------------------------------------

_NEEDS_RAY = "--engine ray needs Ray: pip install 'medtl[ray]' (or 'ray>=2.9')"


def check_ray_support() -> None:
    """Fail before scoring (no CSV started, no progress bar drawn) when Ray is asked for but not installed."""
    if importlib.util.find_spec("ray") is None:
        raise MedtlError(_NEEDS_RAY)


def _ray_load(study: Study, prep: dict[str, Any], keep_scan: bool) -> Item:
    return load_study(study, prep, keep_scan)


def ray_stream(studies: Sequence[Study], prep: dict[str, Any], keep_scan: bool, workers: int, batch_size: int,
               address: str | None, timeout: float | None = None) -> Generator[Item, None, None]:
    """Ray tasks running :func:`load_study`; results in completion order, a bounded number in flight.

    Connects to ``address`` (or ``RAY_ADDRESS``, or an already initialised Ray); otherwise
    starts a local Ray with ``workers`` CPUs and shuts it down at the end. On a cluster, the
    study paths must be readable from every node (shared storage).
    """
    try:
        import ray
    except ImportError:
        raise MedtlError(_NEEDS_RAY) from None
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

        started_at: dict[Any, float] = {}

        def submit() -> None:
            for s in todo:
                ref = task.remote(s, prep_ref, keep_scan)
                in_flight[ref] = s
                started_at[ref] = time.monotonic()
                if len(in_flight) >= window:
                    return

        submit()
        while in_flight:
            left = None if timeout is None else max(0.0, min(started_at[r] for r in in_flight) + timeout
                                                    - time.monotonic())
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=left)
            if not done:  # the oldest task is past the per-study limit: cancel it, fail its study
                from medtl.infer.isolate import timeout_message

                ref = min(in_flight, key=started_at.__getitem__)
                study = in_flight.pop(ref)
                started_at.pop(ref)
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                submit()
                yield {"study": study, "x": None, "error": timeout_message(timeout), "format": "", "shape": "",
                       "notes": "", "scan": None, "seconds": float(timeout)}
                continue
            ref = done[0]
            study = in_flight.pop(ref)
            started_at.pop(ref, None)
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
