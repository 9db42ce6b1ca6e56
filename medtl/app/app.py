"""The medtl app: a browser page where a clinician drops a scan and sees what a trained
model says about it, where it looked, and what the model is (and is not) for.

    medtl app --model runs/tiny                    # http://127.0.0.1:7860
    medtl app --model lung=runs/a --model runs/b   # several models, picked in the page

:func:`build_app` returns the ``gr.Blocks``; :func:`launch` serves it (loopback
unless told otherwise; no public share links); :func:`serve` is what ``medtl app`` calls.
Scans are read with ``medtl.io`` and scored with ``medtl.infer.Predictor`` (the
model card's own preprocessing and threshold), exactly as ``medtl predict`` does;
the viewer rules live in :mod:`medtl.app.viewer`, upload checks in :mod:`medtl.app.uploads`.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import ipaddress
import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gradio as gr
import numpy as np
from medtl._fileutil import CANNOT_WRITE, file_safe, scan_stem
from medtl.app import viewer as V
from medtl.app.limits import app_timeout, call_with_limit, warm_up
from medtl.app.study import header_markdown, read_upload, without_folders
from medtl.app.uploads import private_gradio_cache, stage_upload
from medtl.errors import BlankScanError, DomainError, MedtlError
from medtl.explain import DEFAULT_METHOD, METHOD_TITLES, METHODS as EXPLAIN_METHODS
from medtl.explain import SALIENCY_CMAP, SALIENCY_THRESHOLD, colour_bar, method_title, save_overlay_png
from medtl.explain import save_saliency_nifti
from medtl.infer import Prediction, Predictor
from medtl.infer.predictor import OOD_WARNING
from medtl.io import Scan
from medtl.runs import card_path

__all__ = ["ANALYZE_OUTPUTS", "EXPLAIN_DECISION", "METHODS", "MedtlApp", "build_app", "launch", "model_choices",
           "serve"]

log = logging.getLogger("medtl.app")

#: Saliency methods offered, label -> ``medtl.explain`` name; the first is ``medtl.explain.DEFAULT_METHOD``
#: (the measured winner of ``benchmarks/saliency.py``).
METHODS: dict[str, str] = {METHOD_TITLES[m]: m for m in (DEFAULT_METHOD, *(m for m in EXPLAIN_METHODS
                                                                          if m != DEFAULT_METHOD))}
#: The method selected when the page opens.
DEFAULT_METHOD_LABEL = METHOD_TITLES[DEFAULT_METHOD]
#: The first choice of "Class the map explains" (``/change_target``; ``""`` means it too): the class the model decided,
#: whichever it is. The other choices are the selected model's classes by name.
EXPLAIN_DECISION = "The decision"
#: What ``/analyze`` (and ``/pick_series``) return, in order, for API clients.
ANALYZE_OUTPUTS = ("series", "facts", "banner", "probabilities", "decision", "plane", "slice", "preset", "level",
                   "width", "overlay", "overlay_png", "saliency_nifti", "error", "study", "view_info", "card", "readout")
#: Seconds a slice must stay on screen before its labelled download picture (matplotlib) is made.
DOWNLOAD_SETTLE_S = 0.3
#: Seconds a closed tab's session (its scan, maps and pictures) is kept before it is freed. Gradio keeps
#: a closed session an hour, so that a tab reopened can go on; a page is never reopened with its old
#: session here, and an hour of closed CT volumes fills a shared server. The grace covers a dropped
#: connection that comes back: a session used again after its tab closed is kept.
CLOSED_SESSION_GRACE_S = 300.0
#: Largest upload the server accepts (the archive checks in medtl.app.uploads apply on top).
MAX_UPLOAD = "2gb"

#: What the viewer's picture shows, for screen readers (its plane, slice and orientation are the line under it).
VIEWER_ALT = ("Slice of the uploaded scan, with the model's saliency map laid over it in colour when the model gave "
              "a result; the line under the picture gives the plane, slice and orientation")
#: The colour scale's text: what high means, and what is not drawn (the colour maps medtl uses grow brighter
#: from 0 to 1, as ``inferno`` does).
COLOUR_BAR_ALT = (f"Colour scale of the saliency overlay ({SALIENCY_CMAP}): from dark at 0 to bright at 1, the map's "
                  f"value relative to its maximum; where the map is below {SALIENCY_THRESHOLD:g}, the scan is shown "
                  "without colour")

DISCLAIMER = ("Research tool. The model's output is not a diagnosis: every result must be reviewed by a "
              "qualified clinician.")

#: Gradio's Soft theme with its text colours darkened to WCAG 2.2 AA contrast (4.5:1 for body text): its
#: labels (blue 500 on blue 100, 3.0:1), softer text (slate 400 on white, 2.6:1), selected radio (white on
#: blue 500, 3.7:1), accent and links (sky 600 on slate 50, 3.9:1) fell short.
THEME = gr.themes.Soft(primary_hue="blue", secondary_hue="sky", neutral_hue="slate",
                       font=["Inter", "system-ui", "sans-serif"]).set(
    block_label_text_color="*primary_700", block_title_text_color="*primary_700",
    body_text_color_subdued="*neutral_600", checkbox_label_background_fill_selected="*primary_600",
    color_accent="*primary_600", link_text_color="*secondary_700", link_text_color_active="*secondary_700",
    link_text_color_visited="*secondary_700")
CSS = """
#medtl-header h1 {margin-bottom: 0.1em;}
#medtl-header p {margin-top: 0; color: var(--body-text-color-subdued);}
#medtl-disclaimer {border-left: 4px solid #d97706; background: #fffbeb; padding: 0.5em 0.9em;
                   border-radius: 6px;}
#medtl-disclaimer p {color: #78350f; font-weight: 500; margin: 0;}
#medtl-viewer img {image-rendering: auto; background: #000;}
#medtl-decision h2 {margin: 0.2em 0; font-size: var(--text-lg);}
#medtl-banner:has(li), #medtl-banner:has(p) {border-left: 5px solid #b91c1c; background: #fef2f2; padding: 0.4em 0.8em;
                           border-radius: 6px;}
#medtl-banner p, #medtl-banner li {color: #7f1d1d; font-weight: 600; margin: 0.1em 0;}
.medtl-facts table {font-size: 0.9em;}
footer {display: none !important;}
#medtl-error:has(p) {border-left: 5px solid #b91c1c; background: #fef2f2; padding: 0.5em 0.9em;
                          border-radius: 6px;}
#medtl-error p {color: #7f1d1d; font-weight: 600; margin: 0.1em 0; font-size: 1.05em;}
#medtl-study:has(p) {background: #f1f5f9; padding: 0.3em 0.8em; border-radius: 6px;}
#medtl-study p {margin: 0;}
.medtl-hidden {display: none !important;}
.medtl-sr {position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap;}
#medtl-vi {font-size: 0.9em; color: var(--body-text-color-subdued);}
/* Gradio draws no focus ring on a slider or on the selected radio: a keyboard user lost track of them */
input[type=range]:focus-visible, label:has(> input[type=radio]:focus-visible) {outline: 3px solid var(--color-accent);
                                                                             outline-offset: 2px;}
#medtl-ori-layer {position: absolute; pointer-events: none; z-index: 50;}
#medtl-ori-layer span {position: absolute; color: #fde047; font: 600 16px/1 system-ui, sans-serif;
                       text-shadow: 0 0 3px #000, 0 0 2px #000;}
#medtl-ori-layer .medtl-bar {right: 12px; bottom: 20px; font-size: 12px;}
"""

#: Page script (``launch(js=...)``): mouse wheel and arrow keys over the image step the slice slider
#: (the server draws the slice: no per-scroll matplotlib, one small PNG), orientation letters and the
#: scale bar's length are laid over the drawn picture, and the pointer's pixel is sent for the readout.
VIEWER_JS = r"""
() => {
  if (window.__medtlViewer) return;
  window.__medtlViewer = true;
  const q = (s) => document.querySelector(s);
  let hover = false, lastPointer = 0, pending = null;
  function img() { return q('#medtl-viewer img'); }
  function contentRect(el) {
    const r = el.getBoundingClientRect(), nw = el.naturalWidth, nh = el.naturalHeight;
    if (!nw || !nh || !r.width || !r.height) return null;
    const s = Math.min(r.width / nw, r.height / nh), w = nw * s, h = nh * s;
    return {left: r.left + (r.width - w) / 2, top: r.top + (r.height - h) / 2, width: w, height: h, scale: s};
  }
  function step(d) {
    const box = q('#medtl-slice'), range = q('#medtl-slice input[type=range]');
    if (!box || !range || box.offsetParent === null) return false;
    const min = +range.min, max = +range.max, cur = +range.value;
    const v = Math.min(max, Math.max(min, cur + d));
    if (v === cur) return true;
    window.__medtlStepAt = performance.now();
    range.value = String(v);
    range.dispatchEvent(new Event('input', {bubbles: true}));
    range.dispatchEvent(new Event('change', {bubbles: true}));
    return true;
  }
  document.addEventListener('wheel', (e) => {
    const v = q('#medtl-viewer');
    if (!v || !v.contains(e.target) || e.deltaY === 0) return;
    if (step(e.deltaY > 0 ? 1 : -1)) e.preventDefault();
  }, {passive: false, capture: true});
  document.addEventListener('keydown', (e) => {
    const v = q('#medtl-viewer');
    if (!v) return;
    const t = e.target, typing = t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable);
    if (!(hover || v.contains(t)) || (typing && !v.contains(t))) return;
    const d = {ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10}[e.key];
    if (d !== undefined && step(d)) e.preventDefault();
  }, {capture: true});
  function sendPointer(text) {
    const ta = q('#medtl-pointer input[type=range]');
    if (!ta || ta.value === text) return;
    ta.value = text;
    ta.dispatchEvent(new Event('input', {bubbles: true}));
    ta.dispatchEvent(new Event('change', {bubbles: true}));
  }
  document.addEventListener('mousemove', (e) => {
    const el = img(), v = q('#medtl-viewer');
    hover = !!(v && v.contains(e.target));
    if (!el || !hover) return;
    const c = contentRect(el);
    if (!c) return;
    const col = (e.clientX - c.left) / c.scale, row = (e.clientY - c.top) / c.scale;
    if (col < 0 || row < 0 || col >= el.naturalWidth || row >= el.naturalHeight) return;
    pending = String(Math.floor(row) * 65536 + Math.floor(col) + 1);
    const now = performance.now();
    if (now - lastPointer > 80) { lastPointer = now; sendPointer(pending); pending = null; }
  }, {capture: true});
  setInterval(() => { if (pending) { sendPointer(pending); pending = null; } }, 120);
  let layer = null;
  function place() {
    const vi = q('#medtl-vi'), el = img();
    if (!layer) {
      layer = document.createElement('div');
      layer.id = 'medtl-ori-layer';
      layer.setAttribute('aria-hidden', 'true');  // drawn for the eye; #medtl-vi says it in words
      for (const k of ['top', 'bottom', 'left', 'right', 'bar']) {
        const s = document.createElement('span'); s.id = 'medtl-ori-' + k;
        if (k === 'bar') s.className = 'medtl-bar';
        layer.appendChild(s);
      }
      document.body.appendChild(layer);
    }
    const c = el && vi && vi.dataset.top !== undefined ? contentRect(el) : null;
    if (!c || el.offsetParent === null) { layer.style.display = 'none'; return; }
    layer.style.display = 'block';
    Object.assign(layer.style, {left: (c.left + window.scrollX) + 'px', top: (c.top + window.scrollY) + 'px',
                                width: c.width + 'px', height: c.height + 'px'});
    const L = (k) => layer.querySelector('#medtl-ori-' + k);
    const set = (k, txt, css) => { const s = L(k); if (s.textContent !== txt) s.textContent = txt; Object.assign(s.style, css); };
    set('top', vi.dataset.top || '', {left: '50%', top: '34px', transform: 'translateX(-50%)'});
    set('bottom', vi.dataset.bottom || '', {left: '50%', bottom: '4px', transform: 'translateX(-50%)'});
    set('left', vi.dataset.left || '', {left: '4px', top: '50%', transform: 'translateY(-50%)'});
    set('right', vi.dataset.right || '', {right: '4px', top: '50%', transform: 'translateY(-50%)'});
    set('bar', vi.dataset.bar || '', {right: '12px', bottom: (22 * c.scale + 4) + 'px'});
  }
  // Messages that appear after an upload are read out without moving the focus (WCAG 4.1.3): a failure
  // and the out-of-distribution banner at once, the decision after what is being read. The viewer's
  // picture is described by the line under it (plane, slice, orientation). Set again if Gradio redraws.
  const ARIA = {'#medtl-error': {role: 'alert'}, '#medtl-banner': {role: 'alert'},
                '#medtl-decision': {role: 'status', 'aria-atomic': 'true'},
                '#medtl-viewer img': {'aria-describedby': 'medtl-vi', alt: __VIEWER_ALT__}};
  function mark() {
    for (const [sel, attrs] of Object.entries(ARIA)) {
      const el = q(sel);
      if (!el) continue;
      for (const [k, v] of Object.entries(attrs)) if (el.getAttribute(k) !== v) el.setAttribute(k, v);
    }
  }
  setInterval(() => { place(); mark(); }, 100);
  window.addEventListener('scroll', place, true);
  window.addEventListener('resize', place);
}
"""
# The viewer picture's text goes in from the page script: gr.Image takes alt_text only from Gradio 6.27 on.
VIEWER_JS = VIEWER_JS.replace("__VIEWER_ALT__", json.dumps(VIEWER_ALT))


@dataclass
class Session:
    """One browser session's loaded scan and what was computed on it (kept in ``gr.State``)."""

    scan: Scan
    display: Scan  # the scan in display orientation (medtl.app.viewer.for_display)
    name: str
    is_ct: bool
    outdir: Path
    series: list[dict] = field(default_factory=list)
    #: Study header from the DICOM tags (patient, dates, accession): shown in the page only, never logged
    #: or written (``repr=False`` keeps it out of any log line that prints the session).
    header: dict[str, str] = field(default_factory=dict, repr=False)
    #: What the readers noted about the file (missing slices, no geometry ...): shown with the facts.
    notes: list[str] = field(default_factory=list, repr=False)
    model: str | None = None
    prediction: Prediction | None = None
    #: Pictures written for the viewer while scrolling (the oldest are removed), in :attr:`viewdir`.
    views: list[Path] = field(default_factory=list, repr=False)
    #: The session's folder for those pictures inside Gradio's cache (made at the first one).
    viewdir: Path | None = field(default=None, repr=False)
    view_seq: int = 0
    #: The class the saliency map explains, chosen in the page (None: the decision); reset by a model change.
    target: str | None = None
    #: (model, method, class) -> saliency in display orientation, and the map in the scan's geometry.
    saliency: dict[tuple[str, str, str], tuple[Scan, Scan]] = field(default_factory=dict)
    #: Saliency NIfTI written -> the (model, method, class) of the map it holds: the same file name is
    #: written again for another model's or class's map instead of serving the earlier one.
    niftis: dict[Path, tuple[str, str, str]] = field(default_factory=dict, repr=False)

    @property
    def stem(self) -> str:
        return scan_stem(self.name) or "scan"


def series_label(d: dict) -> str:
    """One series of an upload in the picker: index, modality, number, description, files (series of one
    study often share a description)."""
    number = f" #{d['series_number']}" if d.get("series_number") is not None else ""
    return (f"[{d['index']}] {d.get('modality') or '?'}{number} {d.get('description') or ''} "
            f"({d.get('n_files')} file{'' if d.get('n_files') == 1 else 's'})")


def drop_session(s: Session | None) -> None:
    """Delete a session's output folder (its files were already handed to Gradio's cache) and its
    viewer pictures (written in Gradio's cache)."""
    if isinstance(s, Session):
        shutil.rmtree(s.outdir, ignore_errors=True)
        if s.viewdir is not None:
            shutil.rmtree(s.viewdir, ignore_errors=True)


def user_message(exc: BaseException) -> str:
    """The one-line message shown in the page: server folders are cut from paths (the file
    name stays), so the page never shows where uploads are kept."""
    return without_folders(str(exc)) or type(exc).__name__


def _server_disk(exc: BaseException, action: str) -> str | None:
    """What the page says when the server's disk refused a file (full, read-only), and the log line for its
    administrator (the reason only: the file's path holds the upload's name); None for other failures."""
    if not (isinstance(exc, OSError) and exc.errno in CANNOT_WRITE):
        return None
    log.error("%s failed: the server could not write a file (%s)", action, exc.strerror)
    return f"the server could not write a file ({exc.strerror}); ask its administrator to free disk space"


def _friendly(action: str) -> Callable:
    """Turn any failure of a handler into ``gr.Error`` with a readable line.

    medtl's own errors carry a user-facing message; anything else is logged
    server-side (exception type and stack frames only: messages can hold file
    names or values from the scan) and reported as an unexpected failure.
    Rust decoders raise ``PanicException``, a ``BaseException``, so that is caught too.
    """
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except MedtlError as exc:
                log.info("%s refused: %s", action, type(exc).__name__)
                raise gr.Error(user_message(exc), title=f"Could not {action}", print_exception=False) from None
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - the page must never show a stack trace
                disk = _server_disk(exc, action)
                if disk:
                    raise gr.Error(disk, title=f"Could not {action}", print_exception=False) from None
                log.error("%s failed with %s\n%s", action, type(exc).__name__,
                          "".join(traceback.format_tb(exc.__traceback__)))
                raise gr.Error(f"Unexpected {type(exc).__name__} while trying to {action}; the details are in the "
                               "server log.", title=f"Could not {action}", print_exception=False) from None
        return wrapper
    return decorate


def _page_message(exc: BaseException, action: str) -> str:
    """What the page says about a failure: medtl's own message (written for people), or a short
    line for anything unexpected (whose type and stack frames go to the server log, never its message,
    which can hold values from the scan)."""
    if isinstance(exc, gr.Error):
        return str(exc.message)
    if isinstance(exc, DomainError):  # the CLI's override has no place in the page: say what a clinician can do
        fix = ("check the file: it holds no picture (an empty export or a black frame?)"
               if isinstance(exc, BlankScanError) else
               "choose a model trained for this kind of scan; this one's card says what it was trained on")
        exc = DomainError(exc.path and Path(exc.path).name, exc.reason, fix)
    if isinstance(exc, MedtlError):
        log.info("%s refused: %s", action, type(exc).__name__)
        text = user_message(exc)
        return text if text.startswith("The model ") else f"Could not {action}: {text}"
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise exc
    disk = _server_disk(exc, action)
    if disk:
        return f"Could not {action}: {disk}."
    log.error("%s failed with %s\n%s", action, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
    return f"Could not {action}: an unexpected {type(exc).__name__} (the details are in the server log)."


def model_choices(specs: Sequence[str]) -> dict[str, Path]:
    """``NAME=RUN_DIR`` or ``RUN_DIR`` arguments -> ``{name: run_dir}`` (names default to the
    folder name, made unique). Every run must hold a ``model_card.json``."""
    models: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or Path(spec).exists():
            name, path = "", spec
        run = Path(path).expanduser()
        card_path(run)  # a missing folder, a run still training or one to resume: said as `medtl predict` says it
        base = name or run.resolve().name
        unique, n = base, 2
        while unique in models:
            unique, n = f"{base} ({n})", n + 1
        models[unique] = run
    if not models:
        raise MedtlError("no model given; pass --model RUN_DIR (a folder written by `medtl train`)")
    return models


class MedtlApp:
    """The page's handlers and their shared state (predictors, working folder).

    Predictors load on first use and are shared by all sessions; a lock per model
    serialises its use, because saliency hooks live on the model itself.
    """

    def __init__(self, models: Mapping[str, str | os.PathLike], device: str = "auto") -> None:
        if not models:
            raise MedtlError("no model given; pass --model RUN_DIR (a folder written by `medtl train`)")
        self.models = {str(k): Path(v) for k, v in models.items()}
        self.device = device
        self._predictors: dict[str, Predictor] = {}
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in self.models}
        self._load_lock = threading.Lock()
        from medtl.app.uploads import make_workdir, remove_stale_workdirs

        remove_stale_workdirs()  # uploads and session folders an earlier, killed server left behind
        self.workdir = make_workdir()
        atexit.register(shutil.rmtree, self.workdir, True)

    # --- models --------------------------------------------------------------------------------

    def predictor(self, name: str) -> Predictor:
        if name not in self.models:
            raise MedtlError(f"unknown model {name!r}; choose one of {', '.join(self.models)}")
        with self._load_lock:
            if name not in self._predictors:
                self._predictors[name] = Predictor.from_run(self.models[name], device=self.device)
            return self._predictors[name]

    def card_markdown(self, name: str) -> str:
        """The model card summary as Markdown (what it learnt from, how well, what for)."""
        pred = self.predictor(name)
        rows = []
        for line in pred.describe().splitlines():
            key, sep, value = line.partition(": ")
            rows.append(f"- **{key}:** {value}" if sep else f"- {line}")
        sal = pred.card.get("saliency")
        if isinstance(sal, dict) and isinstance(sal.get("pointing_game"), (int, float)):
            rows.append(f"- **Saliency:** {sal.get('title') or sal.get('method')} pointed at the lesion in "
                        f"{sal['pointing_game']:.0%} of {sal.get('n', '?')} {sal.get('split', '')} positives "
                        "(map maximum within 2 voxels of the lesion mask)")
        return f"**{name}**\n\n" + "\n".join(rows)

    def examples(self) -> list[tuple[str, str]]:
        """``(label, path)`` of built-in samples that fit the models' dimensions."""
        from medtl.demo.cohort import sample_path

        dims = set()
        for name in self.models:
            try:
                dims.add(int(self.predictor(name).spatial_dims))
            except MedtlError:
                continue
        out = []
        if 2 in dims or not dims:
            out.append(("CT slice (DICOM)", str(sample_path("ct2d"))))
        if 3 in dims:
            out.append(("CT volume (NIfTI)", str(sample_path("ct3d"))))
        return out

    # --- computing -----------------------------------------------------------------------------

    def _load(self, files: Any, series: Any) -> Session:
        paths = [files] if isinstance(files, (str, os.PathLike)) else list(files or [])
        paths = [str(getattr(p, "name", p)) for p in paths]
        stage = stage_upload(paths, self.workdir / f"upload-{uuid.uuid4().hex}")
        pick = None if series in (None, "") else int(series)
        name = Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} files"
        try:
            found, scan, header, notes = call_with_limit(read_upload, stage, pick, timeout=app_timeout(),
                                                         what=f"reading {name}")
        finally:
            if stage.is_dir() and stage.parent == self.workdir:
                shutil.rmtree(stage, ignore_errors=True)
        outdir = self.workdir / f"out-{uuid.uuid4().hex}"
        outdir.mkdir()
        return Session(scan=scan, display=V.for_display(scan), name=name,
                       is_ct=V.looks_like_ct(scan.modality, scan.array), outdir=outdir, series=found, header=header,
                       notes=notes)

    def _predict(self, s: Session, model: str) -> None:
        # nothing of the previous model stays if this one refuses the scan; its classes are not this one's
        s.prediction, s.model, s.target = None, model, None
        pred = self.predictor(model)
        dims = getattr(pred, "spatial_dims", None)
        if dims == 3 and s.scan.is_2d:
            raise MedtlError(f"The model {model} expects a 3D volume; this file is a single slice (a single 2D "
                             "image was given to a 3D model). Choose a 2D model, or upload every file of the "
                             "series (or a .zip of it).")
        if dims == 2 and not s.scan.is_2d:
            raise MedtlError(f"The model {model} expects a single 2D slice; this file is a volume of "
                             f"{s.scan.shape[2]} slices (a volume with {s.scan.shape[2]} slices was given to a 2D "
                             "model). Choose a 3D model, or upload one slice.")
        with self._locks[model]:
            s.prediction = pred.predict(s.scan)
        s.model = model

    @staticmethod
    def explained(s: Session) -> str:
        """The class the session's saliency map explains: the one chosen in the page, else the decision."""
        return s.target or s.prediction.decision

    def _saliency(self, s: Session, method_label: str, progress: Any = None,
                  class_name: str | None = None) -> tuple[Scan, Scan]:
        """The map of ``class_name`` (default: :meth:`explained`), computed once per (model, method, class)."""
        method = METHODS.get(method_label)
        if method is None:
            raise MedtlError(f"unknown saliency method {method_label!r}; choose one of {', '.join(METHODS)}")
        class_name = class_name or self.explained(s)
        key = (s.model or "", method, class_name)
        if key not in s.saliency:
            pred = self.predictor(s.model)
            if progress is not None:
                slow = " (3D: this can take a while)" if not s.scan.is_2d and method == "occlusion" else ""
                progress(0.6, desc=f"Computing {method_label}{slow}")
            target = pred.class_names.index(class_name)
            with self._locks[s.model]:
                sal, _ = pred.saliency(s.scan, method, target=target,  # labelled with the probability shown
                                       probabilities=[s.prediction.probabilities[c] for c in pred.class_names])
            if tuple(sal.array.shape[:3]) != tuple(s.scan.shape):
                raise MedtlError(f"saliency map {tuple(sal.array.shape[:3])} does not match the scan {s.scan.shape}")
            s.saliency[key] = (V.for_display(sal, like=s.scan), sal)
        return s.saliency[key]

    def _draw(self, s: Session, plane: str, slice_no: Any, level: Any, width: Any, alpha: Any,
              method_label: str) -> tuple[np.ndarray, np.ndarray, str, str, int, int]:
        """The slice as shown (with the scale bar), the plain overlay, the view's info line (orientation
        letters, position in mm, scale bar length), and the plane, index and count drawn. No matplotlib:
        this runs on every wheel step."""
        plane = plane if plane in V.planes(s.display) else "axial"
        n = V.n_slices(s.display, plane)
        index = int(np.clip(int(round(float(slice_no or 1))) - 1, 0, n - 1))
        window = None if s.display.is_color else (float(level), float(width))
        sal = self._saliency(s, method_label)[0] if s.prediction is not None else None
        rgb = V.render_fast(s.display, plane, index, window, sal, alpha=float(alpha))
        mm_px = V.display_mm_per_pixel(s.display, plane, rgb.shape[:2])
        bar = V.scale_bar(mm_px, rgb.shape[1]) if mm_px else None
        shown = V.draw_scale_bar(rgb, bar[1]) if bar else rgb
        return shown, rgb, self.view_info(s, plane, index, n, bar), plane, index, n

    @staticmethod
    def view_info(s: Session, plane: str, index: int, n: int, bar: tuple[float, int] | None) -> str:
        """The line under the image, carrying the orientation letters for the page script."""
        import html

        letters = V.orientation_letters(s.display, plane) or {}
        where = V.slice_position(s.display, plane, index)
        parts = [f"{plane.capitalize()} slice {index + 1} of {n}" if n > 1 else "Single slice"]
        if n > 1:
            parts.append(f"position {where[0]} {where[1]:.1f} mm" if where else "position unknown (no geometry)")
        if bar:
            parts.append(f"scale bar {bar[0]:g} mm")
        elif not V.pixel_size_known(s.scan):
            parts.append("pixel size unknown: no scale bar")
        if s.target is not None and s.prediction is not None:  # a class chosen in the page: say what the colour is
            parts.append(f"saliency map of {s.target} (p = {s.prediction.probabilities[s.target]:.3f})")
        if not letters:
            parts.append("orientation unknown (not in the file)")
        data = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in letters.items())
        bar_text = f' data-bar="{bar[0]:g} mm"' if bar else ""
        # the letters drawn on the picture's edges, in words for screen readers (the drawn ones are hidden)
        said = (f'<span class="medtl-sr"> · orientation: {html.escape(letters["top"])} at the top, '
                f'{html.escape(letters["bottom"])} at the bottom, {html.escape(letters["left"])} on the left, '
                f'{html.escape(letters["right"])} on the right</span>') if letters else ""
        return (f'<div id="medtl-vi" {data}{bar_text} data-slice="{index + 1}">'
                + html.escape(" · ".join(parts)) + said + "</div>")

    def _render(self, s: Session, plane: str, slice_no: Any, level: Any, width: Any, alpha: Any,
                method_label: str) -> tuple[np.ndarray, str]:
        shown, _, _, plane, index, n = self._draw(s, plane, slice_no, level, width, alpha, method_label)
        return shown, self._download(s, plane, slice_no, level, width, alpha, method_label)

    def _download(self, s: Session, plane: str, slice_no: Any, level: Any, width: Any, alpha: Any,
                  method_label: str) -> str:
        """The labelled picture to download (matplotlib: made once per change, not per wheel step)."""
        _, rgb, _, plane, index, n = self._draw(s, plane, slice_no, level, width, alpha, method_label)
        method = METHODS.get(method_label, "saliency")
        where = "" if s.scan.is_2d else f"_{plane}{index + 1:03d}"
        path = s.outdir / f"{s.stem}_{method.replace('+', 'pp')}{self._class_part(s)}{where}.png"
        picture, text = rgb, None
        if s.prediction is not None and s.model:  # the download names what it shows
            p, explained = s.prediction, self.explained(s)
            warning = OOD_WARNING if p.out_of_distribution else ""  # the picture never travels without it
            text = {"method": method_title(method), "class": explained,
                    "probability": f"{p.probabilities[explained]:.4f}", "model": str(s.model),
                    **({"warning": warning} if warning else {})}
            picture = V.labelled(rgb, method=text["method"], class_name=explained,
                                 probability=p.probabilities[explained], model=str(s.model),
                                 plane=None if s.scan.is_2d else plane, index=index, n=n, warning=warning)
        save_overlay_png(path, picture, text=text)
        return str(path)

    @staticmethod
    def _class_part(s: Session) -> str:
        """What a download's file name adds for a class chosen in the page (``_class-NAME``; nothing for the
        decision, whose files keep their names)."""
        if s.target is None or s.prediction is None:
            return ""
        return "_class-" + (file_safe(s.target).strip("_") or "x")

    def _nifti(self, s: Session, method_label: str) -> str | None:
        if s.scan.is_2d or s.prediction is None:
            return None
        _, sal = self._saliency(s, method_label)
        key = (s.model or "", METHODS[method_label], self.explained(s))
        path = s.outdir / f"{s.stem}_{METHODS[method_label].replace('+', 'pp')}{self._class_part(s)}_saliency.nii.gz"
        if s.niftis.get(path) != key:  # another model's (or class's) map may hold this name
            save_saliency_nifti(sal, path)
            s.niftis[path] = key
        return str(path)

    # --- markdown ------------------------------------------------------------------------------

    def facts_markdown(self, s: Session, model: str | None = None) -> str:
        modalities: list = []
        try:
            domain = self.predictor(model or s.model or next(iter(self.models))).card.get("domain") or {}
            modalities = list(domain.get("modalities") or [])
        except MedtlError:
            pass
        modality = V.display_modality(s.scan, modalities, s.is_ct)
        facts = [*V.scan_facts(s.scan.summary(), modality), *(("Note", n) for n in s.notes)]
        rows = "\n".join(f"| {k} | {v.replace('|', '/')} |" for k, v in facts)
        return f"| Scan | {s.name} |\n|---|---|\n{rows}"

    @staticmethod
    def banner_markdown(s: Session) -> str:
        """What the reader must know before the probability: outside the training distribution,
        a degenerate model, a domain check overridden (empty when there is nothing to say)."""
        p = s.prediction
        if p is None or not p.warnings:
            return ""
        lines = [w[0].upper() + w[1:] for w in p.warnings]
        if p.out_of_distribution:
            lines[0] = f"{lines[0]} (score {p.ood_score:.3g} above the threshold {p.ood_threshold:.3g})"
        return "\n".join(f"- ⚠ {line}" for line in lines)

    def decision_markdown(self, s: Session) -> str:
        p = s.prediction
        if p is None:
            return ""
        if p.threshold is not None and p.positive_class is not None:
            cmp = "≥" if p.probabilities[p.positive_class] >= p.threshold else "<"
            prob, thr = p.threshold_texts(3)
            why = f"P({p.positive_class}) = {prob} {cmp} threshold {thr} (the model card's operating point)"
        else:
            why = f"most probable class, P = {p.probabilities[p.predicted]:.3f}"
        return f"## Decision: {p.decision}\n{why}. Model: {s.model}."

    # --- handlers ------------------------------------------------------------------------------

    def _view_updates(self, s: Session) -> tuple:
        """Plane, slice, preset, level and width controls reset for a newly loaded scan."""
        planes = V.planes(s.display)
        n = V.n_slices(s.display, "axial")
        plane_u = gr.update(choices=list(planes), value="axial", visible=len(planes) > 1)
        slice_u = gr.update(minimum=1, maximum=max(n, 2), value=(n + 1) // 2 if n > 1 else 1, step=1,
                            visible=n > 1, label=f"Slice (axial, 1-{n})")
        if s.display.is_color:
            off = gr.update(interactive=False, visible=False)
            colour = gr.update(choices=["Colour image"], value="Colour image", interactive=False)
            return plane_u, slice_u, colour, off, off
        file_window = s.scan.default_window
        names = V.window_choices(s.is_ct, file_window)
        preset = V.default_preset(s.is_ct, file_window)
        windows = [V.preset_window(n_, s.scan.array, file_window) for n_ in names]
        (l_lo, l_hi), (w_lo, w_hi) = V.slider_ranges(s.scan.array, windows)
        c, w = V.preset_window(preset, s.scan.array, file_window)
        return (plane_u, slice_u, gr.update(choices=names, value=preset, interactive=True),
                gr.update(minimum=l_lo, maximum=l_hi, value=c, interactive=True, visible=True),
                gr.update(minimum=w_lo, maximum=w_hi, value=w, interactive=True, visible=True))

    def analyze(self, previous: Session | None, files: Any, series: Any, model: str, method: str, alpha: float,
                progress: gr.Progress = gr.Progress(), show_refusal: bool = False) -> tuple:
        """Load the upload, score it, compute the saliency map and draw the middle slice.

        With ``show_refusal`` (the page), a scan the model refuses is still shown (without result or
        overlay) with the reason in the error box; otherwise (the API) the refusal is an error."""
        progress(0.05, desc="Reading the scan")
        s = self._load(files, series)
        drop_session(previous)
        progress(0.3, desc="Running the model")
        error = ""
        try:
            self._predict(s, model)
            self._saliency(s, method, progress)
        except MedtlError as exc:
            if not show_refusal:
                raise
            s.prediction, s.model = None, model
            error = f"⚠ {_page_message(exc, 'run the model')}"
        progress(0.9, desc="Drawing")
        plane_u, slice_u, preset_u, level_u, width_u = self._view_updates(s)
        n = V.n_slices(s.display, "axial")
        level = level_u.get("value", 0.0) if isinstance(level_u, dict) else 0.0
        width = width_u.get("value", 1.0) if isinstance(width_u, dict) else 1.0
        rgb, _, info, *_ = self._draw(s, "axial", (n + 1) // 2, level, width, alpha, method)
        png = self._download(s, "axial", (n + 1) // 2, level, width, alpha, method)
        current = s.scan.metadata.get("series_uid")
        choices = [(series_label(d), str(d["index"])) for d in s.series if d.get("is_image", True)]
        chosen = next((str(d["index"]) for d in s.series if d.get("series_uid") == current), None)
        series_u = gr.update(choices=choices, value=chosen, visible=len(choices) > 1)
        probs = dict(s.prediction.probabilities) if s.prediction is not None else None
        return (s, series_u, self.facts_markdown(s, model), self.banner_markdown(s), probs, self.decision_markdown(s),
                plane_u, slice_u, preset_u, level_u, width_u, rgb, png,
                gr.update(value=self._nifti(s, method), visible=not s.scan.is_2d and s.prediction is not None), error,
                header_markdown(s.header), info, self.card_markdown(model), "")

    def cleared(self, message: str, model: str | None) -> tuple:
        """Every analysis output emptied, with ``message`` in the page's persistent error box: after a
        failed upload nothing of the previous scan or result stays on screen."""
        hide = gr.update(visible=False)
        card = self.card_markdown(model) if model in self.models else gr.skip()
        off = gr.update(interactive=False)  # no window of the previous scan stays on offer
        return (None, gr.update(choices=[], value=None, visible=False), "", "", None, "", hide,
                gr.update(visible=False, value=1), gr.update(choices=[V.AUTO_WINDOW], value=V.AUTO_WINDOW,
                                                             interactive=False), off, off, None, None,
                gr.update(value=None, visible=False), f"⚠ {message}" if message else "", "", "", card, "")

    def upload_page(self, previous: Session | None, files: Any, model: str, method: str, alpha: float,
                    progress: gr.Progress = gr.Progress()) -> tuple:
        return self.analyze_page(previous, files, None, model, method, alpha, progress)

    def analyze_page(self, previous: Session | None, files: Any, series: Any, model: str, method: str, alpha: float,
                     progress: gr.Progress = gr.Progress()) -> tuple:
        """:meth:`analyze` for the page: a failure clears the previous result and shows the reason in
        the page (a message that stays until the next upload), instead of a toast."""
        try:
            return self.analyze(previous, files, series, model, method, alpha, progress, show_refusal=True)
        except BaseException as exc:  # noqa: BLE001 - _page_message decides what to say and log
            drop_session(previous)
            return self.cleared(_page_message(exc, "read the scan"), model)

    def upload(self, previous: Session | None, files: Any, model: str, method: str, alpha: float,
               progress: gr.Progress = gr.Progress()) -> tuple:
        return self.analyze(previous, files, None, model, method, alpha, progress)

    def change_model_page(self, s: Session | None, model: str, method: str, plane: str, slice_no: float,
                          level: float, width: float, alpha: float, progress: gr.Progress = gr.Progress()) -> tuple:
        """The model switch for the page: the card always follows the selected model; if the new model
        refuses the scan, the old probabilities and decision are cleared, the scan stays without overlay
        and the reason is shown in the page."""
        card = self.card_markdown(model)
        if s is None:
            return s, gr.skip(), gr.skip(), gr.skip(), card, gr.skip(), gr.skip(), gr.skip(), "", gr.skip(), \
                gr.skip()
        try:
            out = self.change_model(s, model, method, plane, slice_no, level, width, alpha, progress)
            _, _, _, info, *_ = self._draw(s, plane, slice_no, level, width, alpha, method)
            return (*out, "", self.facts_markdown(s, model), info)
        except BaseException as exc:  # noqa: BLE001
            message = _page_message(exc, "run the model")
            s.prediction, s.model, s.target = None, model, None
            try:
                shown, _, info, *_ = self._draw(s, plane, slice_no, level, width, alpha, method)
            except BaseException:  # noqa: BLE001
                shown, info = None, ""
            return (s, "", None, "", card, shown, None, gr.update(value=None), f"⚠ {message}",
                    self.facts_markdown(s, model), info)

    def view_page(self, s: Session | None, plane: str, slice_no: float, level: float, width: float, alpha: float,
                  method: str, where: Any = 0) -> tuple:
        """A slice change in the page: the picture, its info line and the readout at the pointer's last
        position on the new slice (the download follows)."""
        if s is None:
            return gr.skip(), gr.skip(), gr.skip()
        s.view_seq += 1
        shown, _, info, *_ = self._draw(s, plane, slice_no, level, width, alpha, method)
        return self._quick_png(s, shown), info, self.pointer(s, plane, slice_no, where)

    @staticmethod
    def _quick_png(s: Session, rgb: np.ndarray) -> str:
        """The picture as a fast-compressed PNG (lossless; Gradio's own encoding takes twice as long),
        keeping only the last few of these files. They are written in Gradio's cache folder, which Gradio
        serves without copying: a file elsewhere is copied there, and each slice drawn left a copy for an
        hour or two (``delete_cache``), however many were drawn."""
        import tempfile

        from gradio.utils import get_upload_folder
        from PIL import Image

        if s.viewdir is None:
            cache = Path(get_upload_folder())  # what Gradio's blocks serve from (GRADIO_TEMP_DIR)
            cache.mkdir(parents=True, exist_ok=True)
            s.viewdir = Path(tempfile.mkdtemp(prefix="medtl-views-", dir=cache))
        path = s.viewdir / f"view-{uuid.uuid4().hex}.png"
        Image.fromarray(rgb).save(path, format="PNG", compress_level=1)
        s.views.append(path)
        while len(s.views) > 8:
            s.views.pop(0).unlink(missing_ok=True)
        return str(path)

    def download_page(self, s: Session | None, plane: str, slice_no: float, level: float, width: float,
                      alpha: float, method: str) -> Any:
        if s is None:
            return gr.skip()
        seq = s.view_seq
        time.sleep(DOWNLOAD_SETTLE_S)  # while the wheel still turns, the next slice matters, not this picture
        if s.view_seq != seq:
            return gr.skip()  # a newer slice was drawn: its own download follows
        return self._download(s, plane, slice_no, level, width, alpha, method)

    def pointer(self, s: Session | None, plane: str, slice_no: float, where: Any) -> str:
        """The readout at the pointer (``where = row * 65536 + col + 1`` in the drawn picture's pixels,
        0 for none): the voxel value (HU for CT) and the voxel."""
        try:
            code = int(float(where or 0))
        except (TypeError, ValueError):
            return ""
        if s is None or code <= 0:
            return ""
        row, col = divmod(code - 1, 65536)
        from medtl.explain import display_aspect, display_slice

        plane = plane if plane in V.planes(s.display) else "axial"
        n = V.n_slices(s.display, plane)
        index = int(np.clip(int(round(float(slice_no or 1))) - 1, 0, n - 1))
        picture = display_slice(s.display.array, index, plane)
        size = V.display_size(picture.shape[:2], display_aspect(s.display, plane))
        text = V.readout(s.display, plane, index, size, row, col, s.is_ct)
        return f"Pointer: {text}" if text else ""

    def change_model(self, s: Session | None, model: str, method: str, plane: str, slice_no: float, level: float,
                     width: float, alpha: float, progress: gr.Progress = gr.Progress()) -> tuple:
        card = self.card_markdown(model)
        if s is None:
            return s, gr.skip(), gr.skip(), gr.skip(), card, gr.skip(), gr.skip(), gr.skip()
        progress(0.3, desc="Running the model")
        self._predict(s, model)
        self._saliency(s, method, progress)
        rgb, png = self._render(s, plane, slice_no, level, width, alpha, method)
        return (s, self.banner_markdown(s), dict(s.prediction.probabilities), self.decision_markdown(s), card, rgb,
                png, gr.update(value=self._nifti(s, method)))

    def change_method(self, s: Session | None, method: str, plane: str, slice_no: float, level: float, width: float,
                      alpha: float, progress: gr.Progress = gr.Progress()) -> tuple:
        if s is None:
            return s, gr.skip(), gr.skip(), gr.skip()
        if s.prediction is not None:
            self._saliency(s, method, progress)
        rgb, png = self._render(s, plane, slice_no, level, width, alpha, method)
        return s, rgb, png, gr.update(value=self._nifti(s, method))

    def class_names(self, model: str) -> list[str]:
        """The classes of ``model`` (none when it cannot be loaded: the page says why elsewhere)."""
        try:
            return list(self.predictor(model).class_names)
        except MedtlError:
            return []

    def target_page(self, s: Session | None, model: str) -> Any:
        """"Class the map explains" for the page after a new scan or model: the decision, then the selected
        model's classes; usable only while there is a prediction to explain."""
        return gr.update(choices=[EXPLAIN_DECISION, *self.class_names(model)], value=EXPLAIN_DECISION,
                         interactive=s is not None and s.prediction is not None)

    def _target(self, s: Session, target: Any) -> str | None:
        """The class ``target`` names (None: the decision), checked against the session's model."""
        if target in (None, "", EXPLAIN_DECISION):
            return None
        names = self.class_names(s.model) if s.model else []
        if str(target) not in names:
            raise MedtlError(f"{target!r} is not a class of the model {s.model}; choose {EXPLAIN_DECISION!r} or one "
                             f"of {names}")
        return str(target)

    def change_target(self, s: Session | None, target: str, plane: str, slice_no: float, level: float, width: float,
                      alpha: float, method: str, progress: gr.Progress = gr.Progress()) -> tuple:
        """Explain ``target`` (a class of the model, or :data:`EXPLAIN_DECISION`) in the map, its downloads
        and the line under the picture, until the next scan or model."""
        if s is None:
            return s, gr.skip(), gr.skip(), gr.skip()
        s.target = self._target(s, target)
        if s.prediction is not None:
            self._saliency(s, method, progress)
        rgb, png = self._render(s, plane, slice_no, level, width, alpha, method)
        return s, rgb, png, gr.update(value=self._nifti(s, method))

    def view_info_page(self, s: Session | None, plane: str, slice_no: float, level: float, width: float,
                       alpha: float, method: str) -> Any:
        """The line under the picture alone (after a class was chosen: the picture is already drawn)."""
        if s is None:
            return gr.skip()
        return self._draw(s, plane, slice_no, level, width, alpha, method)[2]

    def change_plane(self, s: Session | None, plane: str, level: float, width: float, alpha: float,
                     method: str) -> tuple:
        if s is None:
            return gr.skip(), gr.skip(), gr.skip()
        n = V.n_slices(s.display, plane)
        middle = (n + 1) // 2
        rgb, png = self._render(s, plane, middle, level, width, alpha, method)
        return gr.update(maximum=max(n, 2), value=middle, label=f"Slice ({plane}, 1-{n})"), rgb, png

    def change_preset(self, s: Session | None, preset: str, plane: str, slice_no: float, alpha: float,
                      method: str) -> tuple:
        if s is None or s.display.is_color:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        c, w = V.preset_window(preset, s.scan.array, s.scan.default_window)
        rgb, png = self._render(s, plane, slice_no, c, w, alpha, method)
        return c, w, rgb, png

    def view(self, s: Session | None, plane: str, slice_no: float, level: float, width: float, alpha: float,
             method: str) -> tuple:
        if s is None:
            return gr.skip(), gr.skip()
        return self._render(s, plane, slice_no, level, width, alpha, method)


def free_closed_sessions(demo: gr.Blocks, grace_s: float = CLOSED_SESSION_GRACE_S) -> None:
    """Free a session ``grace_s`` seconds after its tab closes, unless it was used again since
    (:data:`CLOSED_SESSION_GRACE_S` says why). The state's own ``delete_callback`` (:func:`drop_session`)
    removes its files, as when Gradio expires it."""
    def end_session(request: gr.Request) -> None:
        session_hash, closed_at = request.session_hash, datetime.datetime.now()

        def drop() -> None:
            holder = getattr(demo, "state_holder", None)
            if holder is None or session_hash not in holder:
                return
            used = getattr(holder, "time_last_used", {}).get(session_hash)  # Gradio's clock of its last event
            if used is not None and used > closed_at + datetime.timedelta(seconds=2):
                return  # an event came after the close (not the unload event's own): the page is still there
            holder.delete_state(session_hash)

        timer = threading.Timer(grace_s, drop)
        timer.daemon = True
        timer.start()

    demo.unload(end_session)


def colour_bar_html() -> str:
    """The overlay's colour scale as an ``<img>`` with its text (:data:`COLOUR_BAR_ALT`), embedded in the page: a
    ``gr.Image`` wraps its picture in a button, a tab stop that does nothing."""
    import base64
    import html
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(colour_bar()).save(buf, format="PNG")
    return (f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" '
            f'alt="{html.escape(COLOUR_BAR_ALT)}" style="height: 64px; display: block; margin: 0 auto;">')


def gradio_analytics() -> bool:
    """Whether Gradio may send its telemetry and version check to api.gradio.app (when the page is built and
    served): only when ``GRADIO_ANALYTICS_ENABLED=True`` asks for it. Gradio's own default is on, and a
    hospital's server must not call out to a third party unasked."""
    return os.environ.get("GRADIO_ANALYTICS_ENABLED") == "True"


def build_app(models: Mapping[str, str | os.PathLike], device: str = "auto", pacs_config: Any = None,
              closed_session_grace_s: float = CLOSED_SESSION_GRACE_S) -> gr.Blocks:
    """The page for ``models`` (``{name: run_dir}``; the first is selected). With a PACS configured
    (``pacs_config``: a file or ``PacsConfig``; else where ``medtl pacs`` looks) it has a "From PACS" panel.
    A closed tab's session is freed ``closed_session_grace_s`` seconds later (:func:`free_closed_sessions`)."""
    app = MedtlApp(models, device=device)
    private_gradio_cache(app.workdir)
    names = list(app.models)
    with gr.Blocks(title="medtl - scan classifier", delete_cache=(3600, 3600),
                   analytics_enabled=gradio_analytics()) as demo:
        state = gr.State(None, delete_callback=drop_session)
        with gr.Column(elem_id="medtl-header"):
            gr.Markdown("# medtl scan classifier\nUpload a scan (a DICOM file, several DICOM files or a .zip of a "
                        "series, NIfTI, PNG/JPEG) to see the model's prediction, where it looked, and what the "
                        "model was trained for.")
            gr.Markdown(DISCLAIMER, elem_id="medtl-disclaimer")
        error_box = gr.Markdown("", elem_id="medtl-error")
        study = gr.Markdown("", elem_id="medtl-study")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=240, elem_id="medtl-controls"):
                model_dd = gr.Dropdown(names, value=names[0], label="Model", interactive=len(names) > 1,
                                       elem_id="medtl-model")
                files = gr.File(label="Upload a scan",
                                file_count="multiple", type="filepath", elem_id="medtl-upload")
                series_dd = gr.Dropdown([], label="Series in this upload", visible=False, interactive=True)
                method = gr.Radio(list(METHODS), value=DEFAULT_METHOD_LABEL, label="Saliency method",
                                  info=f"Default: {method_title(DEFAULT_METHOD)}, the method that pointed at the "
                                       "lesion most often in medtl's saliency benchmark")
                target = gr.Dropdown([EXPLAIN_DECISION, *app.class_names(names[0])], value=EXPLAIN_DECISION,
                                     label="Class the map explains", interactive=False, elem_id="medtl-target",
                                     # an API client's session keeps the first model's choices: the handler
                                     # checks the class against the session's model instead
                                     allow_custom_value=True,
                                     info="Default: the decision. Choose a class to see where the model finds "
                                          "evidence for it")
                alpha = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="Overlay opacity")
                example_box = gr.Column()
            with gr.Column(scale=6, min_width=400, elem_id="medtl-viewcol"):
                image = gr.Image(label="Slice with saliency overlay (mouse wheel or arrow keys: slices)", type="numpy",
                                 format="png", height=520, interactive=False, elem_id="medtl-viewer",
                                 buttons=["fullscreen"])
                view_info = gr.HTML("", elem_id="medtl-viewinfo")
                readout = gr.Markdown("", elem_id="medtl-readout")
                # The pixel under the pointer, ``row * 65536 + col + 1`` (0: none), set by the page script.
                pointer_box = gr.Slider(0, 65536 * 65536, value=0, step=1, elem_id="medtl-pointer",
                                        elem_classes=["medtl-hidden"], show_label=False)
                gr.HTML(colour_bar_html(), elem_id="medtl-colourbar")
                with gr.Row():
                    plane = gr.Radio(list(V.PLANES), value="axial", label="Plane", visible=False, scale=2)
                    slice_sl = gr.Slider(1, 2, value=1, step=1, label="Slice", visible=False, scale=3,
                                         elem_id="medtl-slice")
                with gr.Row():
                    preset = gr.Dropdown([V.AUTO_WINDOW], value=V.AUTO_WINDOW, label="Window preset", scale=2)
                    level = gr.Slider(-1000, 1000, value=40, label="Level (center)", scale=3)
                    width = gr.Slider(1, 4000, value=400, label="Width", scale=3)
                with gr.Row():
                    png_btn = gr.DownloadButton("Overlay PNG", value=None, size="sm", variant="secondary")
                    nifti_btn = gr.DownloadButton("Saliency NIfTI", value=None, size="sm", visible=False)
                facts = gr.Markdown("", elem_classes=["medtl-facts"])
            with gr.Column(scale=3, min_width=240, elem_id="medtl-results"):
                banner = gr.Markdown("", elem_id="medtl-banner")
                probs = gr.Label(label="Class probabilities", num_top_classes=10, elem_id="medtl-probs",
                                 show_heading=False)
                decision = gr.Markdown("", elem_id="medtl-decision")
                with gr.Accordion("Model card", open=True):
                    card = gr.Markdown(app.card_markdown(names[0]))

        analyze_out = [state, series_dd, facts, banner, probs, decision, plane, slice_sl, preset, level, width, image,
                       png_btn, nifti_btn, error_box, study, view_info, card, readout]
        view_in = [state, plane, slice_sl, level, width, alpha, method]

        # The page's events show a failure in the persistent error box (and clear what it invalidates);
        # the same handlers are offered to API clients under the documented names, where a failure is
        # an error (hidden buttons: the page never clicks them).
        busy = {"show_progress_on": [image]}
        page = {"api_visibility": "undocumented"}
        # A new scan or model explains its decision again, among the selected model's classes.
        reset_target = {"fn": app.target_page, "inputs": [state, model_dd], "outputs": [target],
                        "show_progress": "hidden", **page}
        # A drop while an earlier one is still being read must not be lost (Gradio's default drops it), and
        # clearing the box stops the reading: what the page ends on is always the box's last content.
        upload = files.upload(app.upload_page, [state, files, model_dd, method, alpha], analyze_out, **page, **busy,
                              trigger_mode="always_last")
        upload.then(**reset_target)
        series_dd.input(app.analyze_page, [state, files, series_dd, model_dd, method, alpha], analyze_out, **page,
                        **busy).then(**reset_target)
        files.clear(lambda m: app.cleared("", m), [model_dd], analyze_out, **page, cancels=[upload]).then(
            **reset_target)
        model_out = [state, banner, probs, decision, card, image, png_btn, nifti_btn]
        model_dd.input(app.change_model_page, [state, model_dd, method, plane, slice_sl, level, width, alpha],
                       [*model_out, error_box, facts, view_info], **page, **busy).then(**reset_target)
        with gr.Row(visible=False):
            api_analyze, api_series, api_model, api_view = (gr.Button(visible=False) for _ in range(4))
        api_analyze.click(_friendly("read the scan")(app.upload), [state, files, model_dd, method, alpha], analyze_out,
                          api_name="analyze")
        api_series.click(_friendly("read the series")(app.analyze), [state, files, series_dd, model_dd, method, alpha],
                         analyze_out, api_name="pick_series")
        api_model.click(_friendly("run the model")(app.change_model),
                        [state, model_dd, method, plane, slice_sl, level, width, alpha], model_out,
                        api_name="change_model")
        method.input(_friendly("compute the saliency map")(app.change_method),
                     [state, method, plane, slice_sl, level, width, alpha], [state, image, png_btn, nifti_btn],
                     api_name="change_method", **busy)
        plane.input(_friendly("change the plane")(app.change_plane), [state, plane, level, width, alpha, method],
                    [slice_sl, image, png_btn], api_name="change_plane", show_progress="hidden").then(
            _friendly("draw the slice")(app.view_page), [*view_in, pointer_box], [image, view_info, readout], **page,
            show_progress="hidden")
        target.input(_friendly("compute the saliency map")(app.change_target),
                     [state, target, plane, slice_sl, level, width, alpha, method], [state, image, png_btn, nifti_btn],
                     api_name="change_target", **busy).then(
            app.view_info_page, view_in, [view_info], **page, show_progress="hidden")
        preset.input(_friendly("apply the window")(app.change_preset), [state, preset, plane, slice_sl, alpha, method],
                     [level, width, image, png_btn], api_name="change_window", show_progress="hidden")
        api_view.click(_friendly("draw the slice")(app.view), view_in, [image, png_btn], api_name="view")
        # Slice, window and opacity changes (wheel and arrow keys move the slice slider): the picture first,
        # then the labelled download, so the next slice is not kept waiting for matplotlib.
        fast = _friendly("draw the slice")(app.view_page)
        slow = _friendly("prepare the download")(app.download_page)
        for control in (slice_sl, level, width, alpha):
            control.input(fast, [*view_in, pointer_box], [image, view_info, readout], **page, show_progress="hidden",
                          trigger_mode="always_last", concurrency_id="view", concurrency_limit=2).then(
                slow, view_in, [png_btn], **page, show_progress="hidden", trigger_mode="always_last",
                concurrency_id="download", concurrency_limit=1)
        pointer_box.input(app.pointer, [state, plane, slice_sl, pointer_box], [readout], **page,
                          show_progress="hidden", trigger_mode="always_last")

        with example_box:
            examples = app.examples()
            if examples:
                gr.Markdown("**Built-in examples** (synthetic phantoms from `sample_data/`)")
                ex_buttons = []
                with gr.Row():
                    for label, path in examples:
                        ex_buttons.append((gr.Button(f"Example: {label}", size="sm"), path))
                for btn, path in ex_buttons:
                    btn.click(functools.partial(_run_example, app, path),
                              [state, model_dd, method, alpha], [files, *analyze_out], api_visibility="undocumented",
                              **busy).then(**reset_target)
        from medtl.app.pacs_tab import add_pacs_tab  # the "From PACS" panel, only when a PACS is configured

        add_pacs_tab(app, pacs_config, container=example_box, state=state, files=files, model=model_dd, method=method,
                     alpha=alpha, outputs=analyze_out, reset_target=reset_target)
        free_closed_sessions(demo, closed_session_grace_s)
    return demo


def _run_example(app: MedtlApp, path: str, previous: Session | None, model: str, method: str, alpha: float,
                 progress: gr.Progress = gr.Progress()) -> tuple:
    """A built-in sample, shown in the upload box and analysed like an upload."""
    return ([path], *app.analyze_page(previous, [path], None, model, method, alpha, progress))


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, **kwargs: Any) -> tuple:
    """Serve ``demo`` on ``host:port`` (loopback by default; never a public share link)."""
    from medtl.demo.cohort import sample_dir

    kwargs.pop("share", None)
    # The built-in examples are served from the sample cohort, wherever the server was started.
    allowed = [*kwargs.pop("allowed_paths", []), str(sample_dir())]
    demo.queue(default_concurrency_limit=2)
    if app_timeout() is not None:
        warm_up()
    return demo.launch(server_name=host, server_port=port, share=False, theme=THEME, css=CSS, js=VIEWER_JS,
                       max_file_size=MAX_UPLOAD, footer_links=[], allowed_paths=allowed, **kwargs)


def _stop_on_sigterm() -> None:
    """SIGTERM (how services are stopped) ends the server as Ctrl+C does, so the ``atexit`` clean-up
    removes the uploaded scans and session folders instead of leaving them in the temporary folder."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model_specs: Sequence[str], host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          pacs_config: str | None = None) -> int:
    """Build the page for the given runs and serve it until interrupted."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    demo = build_app(model_choices(model_specs), device=device, pacs_config=pacs_config)
    _stop_on_sigterm()
    try:
        launch(demo, host=host, port=port, prevent_thread_lock=True)
    except OSError as exc:  # Gradio's words name its own settings; the fix here is --port
        if "Cannot find empty port" not in str(exc):
            raise
        raise MedtlError(f"{host}:{port} is already in use (another medtl app or server?); stop it or choose "
                         "another port with --port") from None
    print(f"medtl app: serving on http://{host}:{port} (Ctrl+C to stop)")  # only once it does
    if not _loopback(host):
        print(f"WARNING: the page has no login: anyone who can reach {host}:{port} can upload scans and, with a PACS "
              "configured, search and open its studies with medtl's credentials; serve it behind a proxy that "
              "authenticates users, or on 127.0.0.1", file=sys.stderr)
    demo.block_thread()
    return 0

