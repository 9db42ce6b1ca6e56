"""DIMSE: C-ECHO, C-FIND, C-GET, C-MOVE (to medtl's own storage SCP) and C-STORE, with ``pynetdicom``.

medtl is ``config.calling_aet``; the PACS is ``config.called_aet`` at ``config.host:port``.
Most PACS answer C-FIND/C-GET/C-MOVE only for AE titles they know: register medtl's AE title
(with ``listen_host:listen_port`` for C-MOVE) in the PACS (Orthanc: ``DicomModalities``).

Retrieval asks for the stored transfer syntaxes (one presentation context per syntax, so the
PACS never has to transcode) and writes each instance atomically under the destination folder
(:func:`medtl.pacs.query.write_instance`). Failures become one :class:`PacsError` line.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medtl.pacs.config import PacsConfig, PacsError
from medtl.pacs.dicomweb import quiet_library_loggers
from medtl.pacs.query import Query, SeriesRef, present_instances, write_raw_instance

__all__ = ["DimsePacs", "StorageSCP"]

log = logging.getLogger("medtl.pacs")

_IMAGE_CLASSES = (
    "CTImageStorage", "MRImageStorage", "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing", "UltrasoundImageStorage", "UltrasoundMultiFrameImageStorage",
    "SecondaryCaptureImageStorage", "NuclearMedicineImageStorage", "EnhancedCTImageStorage", "EnhancedMRImageStorage",
    "DigitalMammographyXRayImageStorageForPresentation", "XRayAngiographicImageStorage",
    "PositronEmissionTomographyImageStorage",
)
_OTHER_CLASSES = (
    "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage", "Comprehensive3DSRStorage",
    "SegmentationStorage", "GrayscaleSoftcopyPresentationStateStorage", "KeyObjectSelectionDocumentStorage",
    "ParametricMapStorage",
)


def _image_syntaxes() -> list[str]:
    from pydicom import uid

    return [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.JPEG2000Lossless, uid.JPEG2000,
            uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.RLELossless]


def _plain_syntaxes() -> list[str]:
    from pydicom import uid

    return [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian]


def _retrieve_contexts() -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs offered for instances coming back (C-GET): at most 127."""
    from pynetdicom import sop_class

    pairs = [(getattr(sop_class, n), ts) for n in _IMAGE_CLASSES for ts in _image_syntaxes()]
    pairs += [(getattr(sop_class, n), ts) for n in _OTHER_CLASSES for ts in _plain_syntaxes()[:2]]
    return pairs[:127]


def _status_text(status: Any) -> str:
    code = getattr(status, "Status", None)
    return "no answer" if code is None else f"status 0x{int(code):04X}"


class StorageSCP:
    """A C-STORE receiver writing instances under ``root`` (atomically, by UID); ``on_instance(path,
    dataset, written)`` is called after each file is in place (from pynetdicom's threads).
    ``accept(dataset) -> bool`` may refuse an instance (it is acknowledged but not kept)."""

    def __init__(self, root: str | os.PathLike, aet: str, host: str = "127.0.0.1", port: int = 11113,
                 on_instance: Callable[[Path, Any, bool], None] | None = None,
                 accept: Callable[[Any], bool] | None = None) -> None:
        self.root = Path(root)
        self.aet, self.host, self.port = aet, host, port
        self.on_instance, self.accept = on_instance, accept
        self.server: Any = None
        self.received = 0
        self.lock = threading.Lock()

    def _handle(self, event: Any) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            if self.accept is not None and not self.accept(ds):
                return 0x0000
            path, written = write_raw_instance(self.root, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                               str(ds.SOPInstanceUID), event.encoded_dataset())
            with self.lock:
                self.received += 1
            if self.on_instance is not None:
                self.on_instance(path, ds, written)
            return 0x0000
        except Exception as exc:  # noqa: BLE001 - answer the sender; never crash the server thread
            from medtl.errors import one_line

            log.warning("C-STORE refused an instance: %s", one_line(exc, 200))
            return 0xA700  # out of resources / cannot store

    def ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification

        quiet_library_loggers()
        ae = AE(ae_title=self.aet)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.maximum_pdu_size = 0
        return ae

    def start(self) -> "StorageSCP":
        from pynetdicom import evt

        if self.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("MEDTL_PACS_LISTEN_ANY"):
            log.warning("storage SCP binds %s: reachable from other machines", self.host)
        try:
            self.server = self.ae().start_server((self.host, self.port), block=False,
                                                 evt_handlers=[(evt.EVT_C_STORE, self._handle)])
        except OSError as exc:
            raise PacsError(f"cannot listen on {self.host}:{self.port} as {self.aet} ({exc.strerror or exc}); "
                            "is another listener running? set dimse.listen_port") from None
        log.info("storage SCP %s listening on %s:%d", self.aet, self.host, self.port)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def __enter__(self) -> "StorageSCP":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class DimsePacs:
    """The PACS over DIMSE, as configured (``host``, ``port``, ``called_aet``, ``calling_aet``)."""

    def __init__(self, config: PacsConfig) -> None:
        quiet_library_loggers()
        self.config = config
        self.host, self.port = config.require_dimse()
        self.where = f"{config.called_aet}@{self.host}:{self.port}"

    def _ae(self) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=self.config.calling_aet)
        t = self.config.timeout
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = t
        ae.connection_timeout = min(t, 10.0)
        return ae

    def _request(self, ae: Any, what: str, **kwargs: Any) -> Any:
        """``ae.associate`` with the peer; a host name that does not resolve (socket.gaierror, raised
        by pynetdicom instead of a failed association) is a :class:`PacsError` naming the peer."""
        try:
            return ae.associate(self.host, self.port, ae_title=self.config.called_aet, **kwargs)
        except OSError as exc:
            raise PacsError(f"{what}: the DICOM peer {self.where} could not be reached ({exc.strerror or exc}); "
                            "check dimse.host in the PACS config", fatal=True) from None

    def _associate(self, ae: Any, what: str, ext_neg: list[Any] | None = None) -> Any:
        assoc = self._request(ae, what, ext_neg=ext_neg)
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            why = f"rejected the association (is {self.config.calling_aet} a known AE title there?)"
        else:
            why = "could not be reached (connection refused or no answer); is the PACS running?"
        raise PacsError(f"{what}: the DICOM peer {self.where} {why}", fatal=True)

    # --- C-ECHO ------------------------------------------------------------------------------

    def echo(self) -> None:
        from pynetdicom.sop_class import Verification

        ae = self._ae()
        ae.add_requested_context(Verification)
        assoc = self._associate(ae, "C-ECHO")
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if getattr(status, "Status", None) != 0:
            raise PacsError(f"C-ECHO: {self.where} answered {_status_text(status)}")

    # --- C-FIND ------------------------------------------------------------------------------

    def _find(self, assoc: Any, ds: Any, what: str) -> list[Any]:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        out = []
        for status, identifier in assoc.send_c_find(ds, FIND):
            code = getattr(status, "Status", None)
            if code is None:
                raise PacsError(f"{what}: no answer from {self.where} (registered {self.config.calling_aet} in the "
                                "PACS's DICOM modalities? Orthanc answers nothing to unknown AE titles)", fatal=True)
            if code in (0xFF00, 0xFF01):
                if identifier is not None:
                    out.append(identifier)
            elif code != 0x0000:
                raise PacsError(f"{what}: {self.where} answered {_status_text(status)}")
        return out

    def find(self, query: Query) -> list[SeriesRef]:
        """Series matching ``query``: a STUDY-level C-FIND, then a SERIES-level one per study."""
        from pydicom import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        ae = self._ae()
        ae.add_requested_context(FIND)
        assoc = self._associate(ae, "C-FIND")
        try:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = query.study_uid or ""
            q.StudyDate = query.date_range or ""
            if query.patient_id:
                q.PatientID = query.patient_id
            if query.accession:
                q.AccessionNumber = query.accession
            if query.modality:
                q.ModalitiesInStudy = query.modality
            studies = [(str(s.StudyInstanceUID), str(s.get("StudyDate", "") or ""))
                       for s in self._find(assoc, q, "C-FIND (studies)") if s.get("StudyInstanceUID")]
            refs = []
            for study_uid, date in studies:
                s = Dataset()
                s.QueryRetrieveLevel = "SERIES"
                s.StudyInstanceUID = study_uid
                s.SeriesInstanceUID = query.series_uid or ""
                s.Modality = query.modality or ""
                s.SeriesDescription = query.series_description or ""
                s.NumberOfSeriesRelatedInstances = ""
                for r in self._find(assoc, s, "C-FIND (series)"):
                    n = r.get("NumberOfSeriesRelatedInstances")
                    refs.append(SeriesRef(study_uid=study_uid, series_uid=str(r.SeriesInstanceUID),
                                          modality=str(r.get("Modality", "") or ""), study_date=date,
                                          description=str(r.get("SeriesDescription", "") or ""),
                                          n_instances=int(n) if n not in (None, "") else None))
        finally:
            assoc.release()
        log.info("C-FIND: %d series match %s", len(refs), query.describe())
        return sorted(refs, key=lambda r: (r.study_uid, r.series_uid))

    # --- C-GET -------------------------------------------------------------------------------

    @staticmethod
    def _series_identifier(ref: SeriesRef) -> Any:
        from pydicom import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = ref.study_uid
        ds.SeriesInstanceUID = ref.series_uid
        return ds

    def _check_final(self, what: str, responses: Any, ref: SeriesRef) -> int:
        """Consume C-GET/C-MOVE responses; raise on a failure status; the number of failed sub-operations."""
        last = None
        for status, _ in responses:
            code = getattr(status, "Status", None)
            if code is None and last is not None:  # answers came, then the association ended: the PACS went away
                raise PacsError(f"{what}: {self.where} stopped answering part way through series {ref.series_uid} "
                                "(the connection was closed); run again to fetch the rest")
            if code is None:
                raise PacsError(f"{what}: no answer from {self.where} for series {ref.series_uid} (registered "
                                f"{self.config.calling_aet} in the PACS's DICOM modalities"
                                f"{' with host and port' if 'MOVE' in what else ''}?)", fatal=True)
            last = status
        code = int(getattr(last, "Status", 0))
        failed = int(getattr(last, "NumberOfFailedSuboperations", 0) or 0)
        if code not in (0x0000, 0xB000):
            raise PacsError(f"{what}: {self.where} answered {_status_text(last)} for series {ref.series_uid}"
                            f"{f' ({failed} instance(s) failed)' if failed else ''}")
        return failed

    @staticmethod
    def _all_here(ref: SeriesRef, dest: str | os.PathLike) -> int | None:
        """The number of the series' instances under ``dest`` when that is all the PACS holds (its C-FIND
        count), so a re-run transfers nothing; ``None`` when some may be missing."""
        have = len(present_instances(dest, ref.study_uid, ref.series_uid))
        return have if ref.n_instances and have >= ref.n_instances else None

    def get(self, ref: SeriesRef, dest: str | os.PathLike) -> tuple[int, int]:
        """C-GET a series into ``dest``; ``(written, already_there)``. A series already all here is not
        asked for again."""
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        here = self._all_here(ref, dest)
        if here is not None:
            return 0, here

        counts = {"written": 0, "present": 0}
        scp = StorageSCP(dest, self.config.calling_aet,
                         on_instance=lambda p, d, w: counts.__setitem__("written" if w else "present",
                                                                        counts["written" if w else "present"] + 1))
        ae = self._ae()
        ae.add_requested_context(GET)
        pairs = _retrieve_contexts()
        for sop, ts in pairs:
            ae.add_requested_context(sop, ts)
        roles = [build_role(sop, scp_role=True) for sop in dict.fromkeys(s for s, _ in pairs)]
        assoc = self._request(ae, "C-GET", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, scp._handle)])
        if not assoc.is_established:
            self._associate(self._ae(), "C-GET")  # raises the right message
        try:
            failed = self._check_final("C-GET", assoc.send_c_get(self._series_identifier(ref), GET), ref)
        finally:
            assoc.release()
        if failed:
            log.warning("C-GET: series %s: %d instance(s) could not be sent", ref.series_uid, failed)
        log.info("C-GET: series %s: %d written, %d already here", ref.series_uid, counts["written"],
                 counts["present"])
        return counts["written"], counts["present"]

    # --- C-MOVE ------------------------------------------------------------------------------

    def move(self, ref: SeriesRef, dest: str | os.PathLike, scp: StorageSCP | None = None) -> tuple[int, int]:
        """C-MOVE a series to medtl's storage SCP (started here on ``listen_port`` unless ``scp`` runs); a
        series already all here is not asked for again."""
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

        here = self._all_here(ref, dest)
        if here is not None:
            return 0, here

        counts = {"written": 0, "present": 0}

        def count(p: Path, d: Any, w: bool) -> None:
            counts["written" if w else "present"] += 1

        own = scp is None
        if own:
            scp = StorageSCP(dest, self.config.calling_aet, self.config.listen_host, self.config.listen_port,
                             on_instance=count).start()
        try:
            ae = self._ae()
            ae.add_requested_context(MOVE)
            assoc = self._associate(ae, "C-MOVE")
            try:
                failed = self._check_final("C-MOVE", assoc.send_c_move(self._series_identifier(ref),
                                                                       self.config.calling_aet, MOVE), ref)
            finally:
                assoc.release()
        finally:
            if own:
                scp.stop()
        if failed:
            log.warning("C-MOVE: series %s: %d instance(s) could not be sent", ref.series_uid, failed)
        log.info("C-MOVE: series %s: %d written, %d already here", ref.series_uid, counts["written"],
                 counts["present"])
        return counts["written"], counts["present"]

    # --- C-STORE -----------------------------------------------------------------------------

    def store(self, datasets: list[Any]) -> None:
        """C-STORE ``datasets`` (medtl's result objects) to the PACS; raise unless all were stored."""
        if not datasets:
            return
        ae = self._ae()
        for sop in dict.fromkeys(str(d.SOPClassUID) for d in datasets):
            for ts in dict.fromkeys(str(d.file_meta.TransferSyntaxUID) for d in datasets
                                    if str(d.SOPClassUID) == sop):
                ae.add_requested_context(sop, ts)
        assoc = self._associate(ae, "C-STORE")
        bad = []
        try:
            for d in datasets:
                status = assoc.send_c_store(d)
                if getattr(status, "Status", None) not in (0x0000, 0xB000, 0xB007, 0xB006):
                    bad.append(_status_text(status))
        finally:
            assoc.release()
        if bad:
            raise PacsError(f"C-STORE: {self.where} refused {len(bad)} of {len(datasets)} result object(s) "
                            f"({', '.join(sorted(set(bad)))})")
        log.info("C-STORE: %d object(s) stored in study %s", len(datasets), datasets[0].StudyInstanceUID)
