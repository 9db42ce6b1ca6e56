"""DICOMweb: QIDO-RS search, WADO-RS retrieve, STOW-RS store (``dicomweb-client``), with HTTP
basic auth or a bearer token from :class:`~medtl.pacs.config.PacsConfig`.

WADO asks for the stored transfer syntax (``application/dicom; transfer-syntax=*``) and
decoding happens in medtl, so a PACS never has to transcode (Orthanc without its GDCM plugin
answers HTTP 500 for JPEG 2000 otherwise). Every failure becomes one
:class:`~medtl.pacs.config.PacsError` line with the server and the fix, secrets redacted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from medtl.io.dicom.budget import pixel_data_complete
from medtl.pacs.config import PacsConfig, PacsError, redact
from medtl.pacs.query import Query, SeriesRef, present_instances, write_instance

__all__ = ["DicomWebPacs"]

log = logging.getLogger("medtl.pacs")
_STORED_SYNTAX = (("application/dicom", "*"),)


def quiet_library_loggers() -> None:
    """The DICOM libraries log request parameters and identifiers at DEBUG: keep them quiet."""
    for name in ("dicomweb_client", "highdicom", "urllib3"):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET or lg.level < logging.WARNING:
            lg.setLevel(logging.WARNING)
    # urllib3 logs a reply whose headers it cannot parse (a multipart type without a boundary) as a WARNING with
    # its traceback; the request then fails as one line of medtl's
    lg = logging.getLogger("urllib3.connection")
    if lg.level < logging.ERROR:
        lg.setLevel(logging.ERROR)
    # pynetdicom logs every refused connection as an ERROR; medtl raises one line of its own instead
    lg = logging.getLogger("pynetdicom")
    if lg.level < logging.CRITICAL:
        lg.setLevel(logging.CRITICAL)


def _value(item: dict[str, Any], tag: str, default: str = "") -> str:
    v = (item.get(tag) or {}).get("Value") or []
    if not v:
        return default
    first = v[0]
    if isinstance(first, dict):  # PN
        return str(first.get("Alphabetic", default))
    return str(first)


#: What tells one QIDO-RS result from another: study, series and instance UIDs.
_IDENTITY = ("0020000D", "0020000E", "00080018")

_TAGS = {"PatientID": "00100020", "AccessionNumber": "00080050", "SeriesDescription": "0008103E",
         "Modality": "00080060", "StudyDate": "00080020"}


def _matches(value: str, pattern: str) -> bool:
    """DICOM wildcard matching (``*``, ``?``; case-sensitive)."""
    import fnmatch

    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


class DicomWebPacs:
    """A DICOMweb server (``config.url``) with the configured authentication."""

    def __init__(self, config: PacsConfig) -> None:
        from dicomweb_client import DICOMwebClient
        from dicomweb_client.session_utils import create_session, create_session_from_user_pass

        quiet_library_loggers()
        self.config = config
        self.url = config.require_dicomweb()
        headers = {}
        if config.token:
            session = create_session()
            headers["Authorization"] = f"Bearer {config.token}"
        elif config.user:
            session = create_session_from_user_pass(config.user, config.password or "")
        else:
            session = create_session()
        self.client = DICOMwebClient(self.url, session=session, headers=headers or None, timeout=config.timeout)
        # dicomweb-client tries every failed request (exceptions included) 5 times by default, 30 s of back-off
        # before a refused connection is reported; the config says how many times
        self.client.set_http_retry_params(retry=config.retries > 0, max_attempts=config.retries + 1)

    # --- errors ------------------------------------------------------------------------------

    def _error(self, exc: BaseException, what: str) -> PacsError:
        import requests

        where = f"DICOMweb server {self.url}"
        fatal = False
        attempt = getattr(exc, "last_attempt", None)  # dicomweb-client's retrying gave up on a retriable answer
        if attempt is not None and isinstance(getattr(attempt, "value", None), requests.Response):
            reply = attempt.value
            msg = (f"{what}: the {where} answered HTTP {reply.status_code} {reply.reason or ''}".rstrip()
                   + f" to all {attempt.attempt_number} attempts (busy or down? try again later, or raise "
                     "dicomweb.retries)")
        elif isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            code = exc.response.status_code
            if code in (401, 403):
                fatal = True
                how = {"basic": "user and password", "bearer": "token"}.get(self.config.auth, "credentials (none set)")
                msg = (f"{what}: the {where} refused the {how} (HTTP {code}); check them in "
                       f"{self.config.source} (dicomweb.user/password[_file] or token[_file], or MEDTL_PACS_*)")
            elif code == 404:
                msg = f"{what}: not found on the {where} (HTTP 404; wrong URL root, e.g. .../dicom-web?)"
            else:
                msg = f"{what}: the {where} answered HTTP {code} {exc.response.reason or ''}".rstrip()
        elif isinstance(exc, requests.exceptions.Timeout):
            fatal = True
            msg = f"{what}: the {where} did not answer within {self.config.timeout:g} s"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            fatal = True
            msg = f"{what}: cannot reach the {where} (connection refused or no route); is the PACS running?"
        else:
            from medtl.errors import one_line

            msg = f"{what}: {one_line(exc, 200)}"
        return PacsError(redact(msg, self.config), fatal=fatal)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PacsError:
            raise
        except Exception as exc:  # noqa: BLE001 - requests/dicomweb-client errors become one line
            raise self._error(exc, what) from None

    # --- QIDO-RS -----------------------------------------------------------------------------

    def _search_all(self, what: str, fn: Callable[..., list], **kwargs: Any) -> list[dict[str, Any]]:
        """Every page of a QIDO-RS search, as dicomweb-client's ``get_remaining`` pages it (``offset`` by what
        came), but ending at a page that brings no result not seen before: a server that ignores ``offset``
        sent its first page forever, which ``get_remaining`` gathered until the memory ran out."""
        out: list[dict[str, Any]] = []
        seen: set[tuple[str, ...]] = set()
        while True:
            page = self._call(what, fn, offset=len(out), **kwargs) or []
            new = []
            for it in page:
                key = tuple(_value(it, t) for t in _IDENTITY)
                if key not in seen:
                    seen.add(key)
                    new.append(it)
            if not new:
                if page:
                    log.warning("%s: the DICOMweb server %s sent the same results again for offset %d (does it "
                                "ignore QIDO-RS offset?); keeping the %d it sent", what, self.url, len(out), len(out))
                return out
            out += new

    def ping(self) -> None:
        """Raise :class:`PacsError` unless a QIDO search answers (reachability + credentials)."""
        self._call("echo (QIDO-RS study search)", self.client.search_for_studies, limit=1)

    def find(self, query: Query) -> list[SeriesRef]:
        """Series matching ``query`` (study- and series-level filters in one QIDO-RS search)."""
        filters = {**query.study_filters(), **query.series_filters()}
        study_uid = filters.pop("StudyInstanceUID", None)
        # Wildcards are matched here: servers differ in how they read an encoded '*' in a query string.
        wild = {k: v for k, v in filters.items() if any(ch in v for ch in "*?")}
        sent = {k: v for k, v in filters.items() if k not in wild}
        items = self._search_all("QIDO-RS series search", self.client.search_for_series,
                                 study_instance_uid=study_uid, search_filters=sent or None,
                                 fields=["StudyDate", "SeriesDescription", "NumberOfSeriesRelatedInstances",
                                         "Modality", *wild])
        out = []
        for it in items:
            if not all(_matches(_value(it, _TAGS[k]), v) for k, v in wild.items()):
                continue
            n = _value(it, "00201209")
            out.append(SeriesRef(study_uid=_value(it, "0020000D"), series_uid=_value(it, "0020000E"),
                                 modality=_value(it, "00080060"), study_date=_value(it, "00080020"),
                                 description=_value(it, "0008103E"), n_instances=int(n) if n.isdigit() else None))
        log.info("QIDO-RS: %d series match %s", len(out), query.describe())
        return sorted(out, key=lambda s: (s.study_uid, s.series_uid))

    # --- WADO-RS -----------------------------------------------------------------------------

    def retrieve(self, ref: SeriesRef, dest: str | os.PathLike) -> tuple[int, int]:
        """Write the series' instances under ``dest`` (see :mod:`medtl.pacs.query`); resumable:
        instances already there are not fetched again. ``(written, already_there)``."""
        have = present_instances(dest, ref.study_uid, ref.series_uid)
        listed = self._search_all("QIDO-RS instance search", self.client.search_for_instances,
                                  study_instance_uid=ref.study_uid, series_instance_uid=ref.series_uid)
        sops = [_value(it, "00080018") for it in listed]
        missing = [s for s in sops if s and s not in have]
        written = received = 0
        if not missing:
            return 0, len(sops)

        def keep(ds: Any) -> None:
            nonlocal written, received
            if not pixel_data_complete(ds):  # the last part of a stream cut short: never saved as done
                raise PacsError(f"series {ref.series_uid}: an instance arrived incomplete (the connection was cut?) "
                                f"after {received} of {len(missing)}; run again to fetch the rest")
            written += write_instance(dest, ds)[1]
            received += 1

        if len(missing) == len(sops):  # nothing here yet: one request for the whole series
            stream = self._call("WADO-RS series retrieve", self.client.iter_series, ref.study_uid, ref.series_uid,
                                media_types=_STORED_SYNTAX)
            it = iter(stream)
            while True:
                ds = self._call("WADO-RS series retrieve", next, it, None)
                if ds is None:
                    break
                keep(ds)
        else:
            for sop in missing:
                keep(self._call("WADO-RS instance retrieve", self.client.retrieve_instance, ref.study_uid,
                                ref.series_uid, sop, media_types=_STORED_SYNTAX))
        if received < len(missing):
            raise PacsError(f"series {ref.series_uid}: the PACS sent {received} of {len(missing)} instances (the "
                            "connection was cut?); run again to fetch the rest")
        log.info("WADO-RS: series %s: %d instance(s) written, %d already here", ref.series_uid, written,
                 len(sops) - len(missing))
        return written, len(sops) - len(missing)

    # --- STOW-RS -----------------------------------------------------------------------------

    def store(self, datasets: Sequence[Any]) -> None:
        """STOW-RS ``datasets`` (one study per call is fastest); raise unless all were stored."""
        if not datasets:
            return
        study = str(datasets[0].StudyInstanceUID)
        same = all(str(d.StudyInstanceUID) == study for d in datasets)
        reply = self._call("STOW-RS store", self.client.store_instances, list(datasets),
                           study_instance_uid=study if same else None)
        failed = list(getattr(reply, "FailedSOPSequence", None) or [])
        if failed:
            reasons = sorted({str(getattr(f, "FailureReason", "?")) for f in failed})
            raise PacsError(f"STOW-RS store: the DICOMweb server {self.url} refused {len(failed)} of "
                            f"{len(datasets)} result object(s) (failure reason {', '.join(reasons)})")
        log.info("STOW-RS: %d object(s) stored in study %s", len(datasets), study)
