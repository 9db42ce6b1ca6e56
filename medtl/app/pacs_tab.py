"""The app's "From PACS" panel: search the configured DICOMweb server, open a series in the viewer,
and send the current prediction back into its study.

- **Search** is a QIDO-RS series search (:meth:`medtl.pacs.dicomweb.DicomWebPacs.find`) with the
  filters of ``medtl pacs find``; medtl's own result series and non-image objects (SR, SEG, PR ...)
  are left out of the list.
- **Open** retrieves the series by WADO-RS into the app's work folder and hands the files to
  :meth:`medtl.app.app.MedtlApp.analyze`, the path an upload takes: viewer, prediction and saliency
  are those of the same files uploaded. The retrieved instances are kept in the session's folder
  (``pacs-source/``, removed with the session) as the sources of what is sent back.
- **Send result to PACS** builds the Comprehensive 3D SR, the Secondary Capture of the overlay and
  the fractional SEG of the saliency map shown (:func:`medtl.pacs.results.build_results`) in the
  source study and stores them by STOW-RS. Their UIDs are derived from (model, series, method),
  so sending again stores the same objects, not new copies.

The panel exists only when a PACS with a DICOMweb URL is configured (``medtl app --pacs-config FILE``,
``MEDTL_PACS_CONFIG``, ``~/.config/medtl/pacs.yaml`` or ``MEDTL_PACS_URL``). The page shows the
server's URL and the kind of authentication, never a credential; log lines carry UIDs only.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from medtl.errors import MedtlError

__all__ = ["PacsTab", "SERIES_COLUMNS", "add_pacs_tab", "resolve_pacs_config"]

log = logging.getLogger("medtl.app")

#: Columns of the search result table.
SERIES_COLUMNS = ["Study date", "Modality", "Series description", "Images", "Study UID", "Series UID"]
#: Most series listed after a search (narrow the filters to see others).
MAX_LISTED = 200
#: Modalities that never hold an image to classify (not listed).
NON_IMAGE_MODALITIES = {"SR", "SEG", "PR", "KO", "REG", "RTSTRUCT", "RTPLAN", "RTRECORD", "DOC", "FID", "PLAN"}
#: Files in the session folder: the retrieved source instances and what was opened / sent.
SOURCE_DIR, SOURCE_REF, SENT = "pacs-source", "pacs-source.json", "pacs-sent.json"


def resolve_pacs_config(pacs_config: Any = None) -> Any:
    """The :class:`~medtl.pacs.PacsConfig` the panel uses, or ``None`` (no panel).

    ``pacs_config``: a ``PacsConfig``, a file, or ``None`` to look where ``medtl pacs`` looks
    (``MEDTL_PACS_CONFIG``, ``~/.config/medtl/pacs.yaml``, ``MEDTL_PACS_*``). A file given
    explicitly must load and name a DICOMweb server; one found implicitly that does not load
    only costs the panel (a warning in the server log).
    """
    explicit = pacs_config is not None
    try:
        from medtl.pacs import PacsConfig, load_pacs_config

        if isinstance(pacs_config, PacsConfig):
            config = pacs_config
        else:
            config = load_pacs_config(pacs_config)
        if not config.url:
            if explicit:
                raise MedtlError(f"PACS config {config.source}: no DICOMweb server (dicomweb.url); the app's "
                                 "'From PACS' panel searches and retrieves by DICOMweb")
            return None
        import dicomweb_client  # noqa: F401 - the panel needs the pacs extra
        import highdicom  # noqa: F401
    except ModuleNotFoundError as exc:
        if explicit:
            raise MedtlError(f"the app's PACS panel needs {exc.name}: pip install 'medtl[pacs]'") from None
        log.warning("a PACS is configured but the 'pacs' extra is missing (%s): no 'From PACS' panel", exc.name)
        return None
    except MedtlError as exc:
        if explicit:
            raise
        from medtl.pacs import redact

        log.warning("PACS config not used, no 'From PACS' panel: %s", redact(str(exc)))
        return None
    return config


def _series_key(sources: list[Any], method: str) -> str:
    """The study key of ``medtl pacs score`` (one instance: ``sop:UID``; a series: ``series:UID``),
    with the saliency method when it is not the default: the same study sent with the same method
    gives the same result UIDs whichever way it was sent."""
    from medtl.pacs.results import result_key

    first = sources[0]
    return result_key(f"sop:{first.SOPInstanceUID}" if len(sources) == 1 else f"series:{first.SeriesInstanceUID}",
                      method)


class PacsTab:
    """The panel's handlers, for one :class:`~medtl.app.app.MedtlApp` and one PACS."""

    def __init__(self, app: Any, config: Any) -> None:
        self.app = app
        self.config = config
        self.config.require_dicomweb()

    def client(self) -> Any:
        """A DICOMweb client (one per request: handlers run in several threads)."""
        from medtl.pacs.dicomweb import DicomWebPacs

        return DicomWebPacs(self.config)

    def describe(self) -> str:
        """What the page says about the server (URL and kind of authentication, no credential)."""
        auth = {"basic": "user and password", "bearer": "token", "none": "no authentication"}[self.config.auth]
        return f"DICOMweb server `{self.config.url}` ({auth})."

    # --- search -----------------------------------------------------------------------------------

    def search(self, patient_id: str = "", accession: str = "", date_from: str = "", date_to: str = "",
               modality: str = "", description: str = "") -> tuple[list[dict], list[list], Any, str]:
        """QIDO-RS: ``(series found, table rows, series picker update, status line)``."""
        from medtl.pacs import Query

        def clean(v: Any) -> str | None:
            v = str(v or "").strip()
            return v or None

        query = Query(patient_id=clean(patient_id), accession=clean(accession), date_from=clean(date_from),
                      date_to=clean(date_to), modality=clean(modality), series_description=clean(description))
        found = self.client().find(query)
        refs = [r for r in found if not r.description.startswith("medtl:")
                and r.modality.upper() not in NON_IMAGE_MODALITIES]
        hidden = len(found) - len(refs)
        shown = refs[:MAX_LISTED]
        rows = [[_date(r.study_date), r.modality, r.description, r.n_instances if r.n_instances is not None else "",
                 r.study_uid, r.series_uid] for r in shown]
        choices = [(_label(r), str(i)) for i, r in enumerate(shown)]
        if not refs:
            status = f"No image series match ({query.describe()})."
        else:
            status = f"{len(refs)} image series match" + (f"; the first {MAX_LISTED} are listed, narrow the search"
                                                          if len(refs) > MAX_LISTED else "") + "."
        if hidden:
            status += f" {hidden} result or non-image series not listed."
        picker = gr.update(choices=choices, value=choices[0][1] if choices else None, interactive=bool(choices))
        return [r.to_dict() for r in shown], rows, picker, status

    def search_page(self, *filters: Any) -> tuple:
        """:meth:`search` for the page: a failure is the status line (the list emptied)."""
        try:
            return self.search(*filters)
        except BaseException as exc:  # noqa: BLE001 - _message decides what to say and log
            return [], [], gr.update(choices=[], value=None), f"⚠ {_message(exc, 'search the PACS')}"

    # --- open -------------------------------------------------------------------------------------

    @staticmethod
    def _pick(found: Any, pick: Any) -> Any:
        from medtl.pacs import SeriesRef

        found = list(found or [])
        if not found:
            raise MedtlError("search the PACS and choose a series first")
        try:
            item = found[int(pick)]
        except (TypeError, ValueError, IndexError):
            raise MedtlError("choose one of the series found") from None
        return SeriesRef(**item) if isinstance(item, dict) else item

    def open(self, previous: Any, found: Any, pick: Any, model: str, method: str, alpha: float,
             progress: gr.Progress = gr.Progress(), show_refusal: bool = False) -> tuple:
        """Retrieve the chosen series and analyse it as an upload: :data:`ANALYZE_OUTPUTS` and a status line."""
        from medtl.app.uploads import MAX_FILES

        ref = self._pick(found, pick)
        if ref.n_instances is not None and ref.n_instances > MAX_FILES:
            raise MedtlError(f"the series has {ref.n_instances} images, more than the app opens ({MAX_FILES}); "
                             "score it with `medtl pacs score`")
        dest = self.app.workdir / f"pacs-{uuid.uuid4().hex}"
        progress(0.02, desc="Retrieving the series from the PACS")
        try:
            written, present = self.client().retrieve(ref, dest)
            folder = dest / ref.study_uid / ref.series_uid
            files = sorted(str(p) for p in folder.glob("*.dcm")) if folder.is_dir() else []
            if not files:
                raise MedtlError(f"the PACS sent no image of series {ref.series_uid}")
            log.info("PACS: retrieved series %s (%d instance(s))", ref.series_uid, len(files))
            out = self.app.analyze(previous, files, None, model, method, alpha, progress, show_refusal=show_refusal)
            s = out[0]
            shutil.move(str(folder), str(s.outdir / SOURCE_DIR))
            (s.outdir / SOURCE_REF).write_text(json.dumps(ref.to_dict()))
        finally:
            shutil.rmtree(dest, ignore_errors=True)
        what = " · ".join(filter(None, [_date(ref.study_date), ref.modality, ref.description]))
        return (*out, f"Opened from the PACS: {what} ({len(files)} image{'s' if len(files) != 1 else ''}).")

    def open_page(self, previous: Any, found: Any, pick: Any, model: str, method: str, alpha: float,
                  progress: gr.Progress = gr.Progress()) -> tuple:
        """:meth:`open` for the page: the upload box is emptied; a failure clears the previous result and
        is shown in the page's error box, as a failed upload is."""
        from medtl.app.app import drop_session

        try:
            return (None, *self.open(previous, found, pick, model, method, alpha, progress, show_refusal=True))
        except BaseException as exc:  # noqa: BLE001
            message = _message(exc, "open the series")
            drop_session(previous)
            return (gr.skip(), *self.app.cleared(message, model), "")

    # --- send -------------------------------------------------------------------------------------

    @staticmethod
    def source_of(s: Any) -> dict | None:
        """The PACS series a session was opened from (``None``: an upload)."""
        path = getattr(s, "outdir", None)
        if path is None or not (Path(path) / SOURCE_REF).is_file():
            return None
        return json.loads((Path(path) / SOURCE_REF).read_text())

    def send(self, s: Any, method_label: str) -> str:
        """Build the SR, Secondary Capture and saliency SEG of the session's prediction in the source
        study and STOW them; what was sent (UIDs), as Markdown."""
        from medtl.app.app import METHODS
        from medtl.pacs.results import build_results, read_sources

        if s is None:
            raise MedtlError("open a series from the PACS first")
        source = self.source_of(s)
        if source is None:
            raise MedtlError("this scan was uploaded, not opened from the PACS: results go back into the study "
                             "they came from, so open the series from the PACS first")
        p = s.prediction
        if p is None or not s.model:
            raise MedtlError("there is no prediction to send (the model did not score this scan)")
        method = METHODS.get(method_label)
        if method is None:
            raise MedtlError(f"unknown saliency method {method_label!r}; choose one of {', '.join(METHODS)}")
        pred = self.app.predictor(s.model)
        sent_path = Path(s.outdir) / SENT
        sent = json.loads(sent_path.read_text()) if sent_path.is_file() else {}
        if f"{pred.model_id} {method}" in sent:
            return _sent_markdown(sent[f"{pred.model_id} {method}"], again=True)
        _, sal = self.app._saliency(s, method_label, class_name=p.decision)  # what the SR reports: the decision
        sources = read_sources(sorted((Path(s.outdir) / SOURCE_DIR).glob("*.dcm")))
        if not sources:
            raise MedtlError("the series opened from the PACS is no longer in the app's folder; open it again")
        if s.scan.metadata.get("series_uid") not in (None, "", str(sources[0].SeriesInstanceUID)):
            raise MedtlError("the scan shown is not the series opened from the PACS; open it again")
        results = build_results(sources, key=_series_key(sources, method), probabilities=dict(p.probabilities),
                                decision=p.decision, threshold=p.threshold, card=pred.card, model_id=pred.model_id,
                                scan=s.scan, saliency=sal, method=method, notes="; ".join(p.warnings),
                                ood=None if p.ood_score is None else (p.ood_score, p.ood_threshold,
                                                                      bool(p.out_of_distribution)))
        self.client().store(results.datasets)
        record = {"study_uid": str(sources[0].StudyInstanceUID), "source_series_uid": source["series_uid"],
                  "model": s.model, "method": method, "decision": p.decision,
                  "sr_uid": str(results.sr.SOPInstanceUID),
                  "sc_uid": str(getattr(results.sc, "SOPInstanceUID", "") or ""),
                  "seg_uid": str(getattr(results.seg, "SOPInstanceUID", "") or "")}
        sent[f"{pred.model_id} {method}"] = record
        sent_path.write_text(json.dumps(sent))
        log.info("PACS: sent SR %s, SC %s, SEG %s into study %s (series %s, model %s, %s)", record["sr_uid"],
                 record["sc_uid"] or "-", record["seg_uid"] or "-", record["study_uid"], record["source_series_uid"],
                 pred.model_id, method)
        return _sent_markdown(record)

    def send_page(self, s: Any, method_label: str) -> str:
        try:
            return self.send(s, method_label)
        except BaseException as exc:  # noqa: BLE001
            return f"⚠ {_message(exc, 'send the result to the PACS')}"


def _date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def _label(r: Any) -> str:
    n = f"{r.n_instances} image{'s' if r.n_instances != 1 else ''}" if r.n_instances is not None else "? images"
    parts = [_date(r.study_date), r.modality, r.description or "(no description)", f"({n})", f"series …{r.series_uid[-10:]}"]
    return " ".join(p for p in parts if p)


def _sent_markdown(r: dict, again: bool = False) -> str:
    head = ("Already sent to the PACS (the same objects; nothing stored twice)" if again
            else "Sent to the PACS") + f": {r['model']}'s result ({r['decision']}, {r['method']}) in study `{r['study_uid']}`"
    lines = [f"- Structured report (Comprehensive 3D SR): `{r['sr_uid']}`"]
    if r.get("sc_uid"):
        lines.append(f"- Secondary Capture of the overlay: `{r['sc_uid']}`")
    if r.get("seg_uid"):
        lines.append(f"- Saliency map (fractional SEG): `{r['seg_uid']}`")
    return head + "\n" + "\n".join(lines)


def _message(exc: BaseException, action: str) -> str:
    """One line for the page (PacsError messages are already free of secrets)."""
    from medtl.app.app import _page_message

    return _page_message(exc, action)


def add_pacs_tab(app: Any, pacs_config: Any, *, container: Any, state: Any, files: Any, model: Any, method: Any,
                 alpha: Any, outputs: list, reset_target: dict | None = None) -> PacsTab | None:
    """Add the "From PACS" panel to ``container`` (inside the app's ``gr.Blocks``) when a PACS is
    configured (see :func:`resolve_pacs_config`); ``None`` (nothing added) otherwise.

    ``state``, ``files``, ``model``, ``method``, ``alpha``: the page's session state, upload box, model,
    saliency method and opacity; ``outputs``: the components :meth:`MedtlApp.analyze` fills, in order;
    ``reset_target``: the page's event (``.then`` arguments) that sets "Class the map explains" back to the
    decision after a new scan.
    API clients get ``/pacs_search``, ``/pacs_open`` (returns ``ANALYZE_OUTPUTS`` and a status line)
    and ``/pacs_send``.
    """
    config = resolve_pacs_config(pacs_config)
    if config is None:
        return None
    from medtl.app.app import ANALYZE_OUTPUTS, _friendly

    tab = PacsTab(app, config)
    found = gr.State([])
    with container:
        with gr.Accordion("From PACS", open=True, elem_id="medtl-pacs"):
            gr.Markdown(f"Search the PACS and open a series in the viewer. {tab.describe()}")
            with gr.Row():
                patient = gr.Textbox(label="Patient ID", placeholder="* ? wildcards", scale=1)
                accession = gr.Textbox(label="Accession", scale=1)
            with gr.Row():
                date_from = gr.Textbox(label="Study date from", placeholder="YYYY-MM-DD", scale=1)
                date_to = gr.Textbox(label="to", placeholder="YYYY-MM-DD", scale=1)
            with gr.Row():
                modality = gr.Textbox(label="Modality", placeholder="CT, CR, DX ...", scale=1)
                description = gr.Textbox(label="Series description", placeholder="* ? wildcards", scale=1)
            search_btn = gr.Button("Search the PACS", size="sm", elem_id="medtl-pacs-search")
            search_status = gr.Markdown("", elem_id="medtl-pacs-status")
            table = gr.Dataframe(headers=SERIES_COLUMNS, value=[], interactive=False, wrap=True, max_height=240,
                                 label="Series found", elem_id="medtl-pacs-table")
            picker = gr.Dropdown([], label="Series to open", interactive=False, elem_id="medtl-pacs-series")
            open_btn = gr.Button("Open in the viewer", variant="primary", size="sm", elem_id="medtl-pacs-open")
            send_btn = gr.Button("Send result to PACS", size="sm", elem_id="medtl-pacs-send")
            send_status = gr.Markdown("", elem_id="medtl-pacs-sent")
    filters = [patient, accession, date_from, date_to, modality, description]
    search_out = [found, table, picker, search_status]
    open_in = [state, found, picker, model, method, alpha]
    image = 1 + ANALYZE_OUTPUTS.index("overlay")  # the viewer (``outputs`` starts with the state)
    busy = {"show_progress_on": [outputs[image]]} if len(outputs) > image else {}
    page = {"api_visibility": "undocumented"}
    search_btn.click(tab.search_page, filters, search_out, **page)
    for box in filters:
        box.submit(tab.search_page, filters, search_out, **page)
    opened = open_btn.click(tab.open_page, open_in, [files, *outputs, search_status], **page, **busy)
    opened.then(lambda: "", None, [send_status], **page, show_progress="hidden")
    if reset_target:
        opened.then(**reset_target)
    send_btn.click(tab.send_page, [state, method], [send_status], **page)
    # The API: the same handlers, a failure is an error (hidden buttons: the page never clicks them).
    with container:
        with gr.Row(visible=False):
            api_search, api_open, api_send = (gr.Button(visible=False) for _ in range(3))
    api_search.click(_friendly("search the PACS")(tab.search), filters, search_out, api_name="pacs_search")
    api_open.click(_friendly("open the series")(tab.open), open_in, [*outputs, search_status], api_name="pacs_open")
    api_send.click(_friendly("send the result to the PACS")(tab.send), [state, method], [send_status],
                   api_name="pacs_send")
    return tab

