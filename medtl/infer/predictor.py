"""Single-study prediction with a trained run: class probabilities, the decision at the model
card's threshold, the preprocessing used, and optionally a saliency map.

    p = Predictor.from_run("runs/tiny")
    pred = p.predict("scan.dcm", saliency=True)      # the default method (medtl.explain.DEFAULT_METHOD)
    pred.probabilities, pred.decision, pred.saliency

The preprocessing is the model card's (``card["preprocessing"]``, the pipeline training
evaluated with); there is no second copy of it here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtl.errors import ArgumentError, MedtlError, one_line
from medtl.guard import DEFAULT_METHOD, OODDetector, features_and_logits
from medtl.guard.ood import FEW_VALIDATION
from medtl.guard.domain import check_header, is_blank, photometric_kind
from medtl.io.scan import Scan
from medtl.runs import card_hash, card_views, ci_text, load_run, resolve_device
from medtl.transforms import Preprocessing, tta_probabilities

__all__ = ["OOD_WARNING", "Prediction", "Predictor", "check_saliency_output", "describe_preprocessing",
           "write_saliency"]


@dataclass
class Prediction:
    """What a model says about one study.

    ``decision``: for a binary model the positive class when its probability is at least
    ``threshold`` (the model card's), else the other class; for more classes the most probable
    one (``threshold`` is then ``None``). ``predicted`` is always the most probable class.
    """

    probabilities: dict[str, float]
    predicted: str
    decision: str
    threshold: float | None
    positive_class: str | None
    source: str
    shape: list[int]
    preprocessing: dict[str, Any]
    preprocessing_text: str
    saliency: Scan | None = None
    saliency_info: dict[str, Any] = field(default_factory=dict)
    #: Out-of-distribution score (higher = further from the training data), its method and threshold;
    #: ``None`` for a model card written before medtl recorded them.
    ood_score: float | None = None
    ood_method: str | None = None
    ood_threshold: float | None = None
    #: ``True`` when the score is above the threshold: the probability is not meaningful.
    out_of_distribution: bool | None = None
    #: What a reader must know before trusting the probability (one line each).
    warnings: list[str] = field(default_factory=list)

    def threshold_texts(self, digits: int = 3) -> tuple[str, str]:
        """P(positive class) and the threshold as text for a reader: ``digits`` decimals, more where
        those would show two different numbers alike (1.000 against a threshold of 1.000)."""
        if self.threshold is None or self.positive_class is None:
            raise ArgumentError("a decision by the most probable class has no threshold")
        prob, thr = self.probabilities[self.positive_class], self.threshold
        for d in range(digits, 17):
            a, b = f"{prob:.{d}f}", f"{thr:.{d}f}"
            if a != b or prob == thr:
                return a, b
        return repr(prob), repr(thr)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (the saliency map itself is left out; its method is kept)."""
        out = {k: getattr(self, k) for k in ("source", "shape", "probabilities", "predicted", "decision",
                                             "threshold", "positive_class", "preprocessing", "ood_score",
                                             "ood_method", "ood_threshold", "out_of_distribution", "warnings")}
        out["preprocessing_text"] = self.preprocessing_text
        if self.saliency is not None:
            out["saliency"] = {k: v for k, v in self.saliency_info.items() if _jsonable(v)}
        return out


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, tuple, dict))


def _class_texts(names: list[str]) -> dict[str, str]:
    """Each class name as a list shows it: in double quotes when one holds a comma, semicolon or colon, so that
    ``sévère, grade 3`` does not read as two classes."""
    if not any(ch in name for name in names for ch in ",;:"):
        return {name: name for name in names}
    return {name: json.dumps(name, ensure_ascii=False) for name in names}


def describe_preprocessing(prep: Preprocessing) -> str:
    """One line telling what the pipeline does to a scan before the network sees it."""
    parts = [f"{prep.spatial_dims}D"]
    if prep.spatial_dims == 3:
        if prep.orientation:
            parts.append(f"reoriented to {prep.orientation}")
        if prep.spacing:
            parts.append(f"resampled to {'x'.join(f'{s:g}' for s in prep.spacing)} mm")
    window = prep.window
    if window == "percentile":
        window = f"percentile {prep.percentiles[0]:g}-{prep.percentiles[1]:g}"
    parts.append(f"window {window} -> [0, 1]")
    size = prep.network_size
    parts.append(f"resized to {'x'.join(str(s) for s in size)}" if size else "native size")
    parts.append("1 channel (gray)" if prep.channels == 1 else f"{prep.channels} channels")
    if prep.normalize != "none":
        parts.append(f"{prep.normalize} normalisation")
    return ", ".join(parts)


OOD_MESSAGE = "outside what this model was trained on: the probability is not meaningful"
#: The line a saliency picture of such a scan carries (app download, ``--saliency`` PNG, PACS secondary capture), so
#: the picture never travels without it.
OOD_WARNING = "OUTSIDE THE TRAINING DATA: the probability is not meaningful"


class Predictor:
    """A trained model with its card and preprocessing, ready to score studies.

    Build it with :meth:`from_run`. ``predict`` scores one study (path, :class:`Scan` or
    array) after the training-domain checks (:meth:`check`); ``score_batch`` scores
    preprocessed tensors with their out-of-distribution scores (what batch scoring uses).
    ``allow_other_domain`` turns the header refusals into warnings. ``device`` defaults to ``"auto"``
    as in :meth:`from_run` (a CUDA GPU when there is one, else the CPU); the model is moved there.
    """

    def __init__(self, model: nn.Module, card: dict[str, Any], preprocessing: Preprocessing,
                 device: str | torch.device = "auto", run_dir: str | os.PathLike | None = None,
                 ood: OODDetector | None = None, allow_other_domain: bool = False) -> None:
        self.device = resolve_device(str(device))  # from_run's default too: one rule however it is built
        self.model = model.to(self.device).eval()
        self.ood = ood
        self.ood_method = (card.get("ood") or {}).get("method", DEFAULT_METHOD) if ood is not None else None
        self.allow_other_domain = allow_other_domain
        self.card = card
        self.preprocessing = preprocessing
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.views = card_views(card)  #: test-time augmentation views (None: plain prediction)
        self.class_names: list[str] = [str(c) for c in card["class_names"]]
        self.positive_class: str | None = None
        self.threshold: float | None = None
        if len(self.class_names) == 2:
            self.positive_class = str(card.get("positive_class") or self.class_names[1])
            if self.positive_class not in self.class_names:
                raise MedtlError(f"model card: positive_class {self.positive_class!r} is not one of "
                                 f"{self.class_names}")
            t = card.get("threshold")
            self.threshold = 0.5 if t is None else float(t)
        self.model_id = f"{card.get('name', 'model')}@{card_hash(self.run_dir)}" if self.run_dir else \
            str(card.get("name", "model"))

    @classmethod
    def from_run(cls, path: str | os.PathLike, device: str = "auto", allow_other_domain: bool = False) -> "Predictor":
        """Load a run directory written by ``medtl train`` (weights, model card, preprocessing,
        out-of-distribution statistics when the card has them)."""
        dev = resolve_device(device)
        model, card, prep = load_run(path, device=str(dev))
        ood = None
        entry = card.get("ood")
        if entry:
            file = Path(path) / entry.get("file", "ood.safetensors")
            if not file.is_file():
                raise MedtlError(f"{file}: out-of-distribution statistics missing from the run (restore the file "
                                 f"or retrain)")
            from safetensors import SafetensorError

            try:
                ood = OODDetector.load(file, entry)
            except (SafetensorError, OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
                raise MedtlError(f"{file}: out-of-distribution statistics do not load ({one_line(exc)}); restore "
                                 "the file and the card's ood entry, or retrain") from None
        return cls(model, card, prep, device=dev, run_dir=path, ood=ood, allow_other_domain=allow_other_domain)

    @property
    def model_warnings(self) -> list[str]:
        """Warnings that hold for every prediction of this model (degenerate training, no OOD score)."""
        out = []
        verdict = self.card.get("degenerate") or {}
        if verdict.get("degenerate"):
            out.append("this model did not learn to separate the classes (" + "; ".join(verdict["reasons"]) +
                       "): its probabilities are not evidence")
        if self.ood is None:
            out.append(f"out-of-distribution score unavailable ({self._no_ood_reason})")
        return out

    @property
    def _no_ood_reason(self) -> str:
        return self.card.get("ood_unavailable") or "model card written before medtl recorded it"

    @property
    def spatial_dims(self) -> int:
        return int(self.preprocessing.spatial_dims)

    # --- scoring -------------------------------------------------------------------------------

    def preprocess(self, x: Any) -> torch.Tensor:
        """Path | Scan | array -> network input ``(C, ...)`` with the card's pipeline."""
        return self.preprocessing(x)

    @torch.no_grad()
    def score_batch(self, tensors: torch.Tensor | Sequence[torch.Tensor | np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(probabilities (N, K) float64, OOD scores (N,) or None)`` of preprocessed inputs
        ``(N, C, ...)`` or a list of ``(C, ...)``, in one forward pass."""
        if isinstance(tensors, torch.Tensor):
            x = tensors
        elif len(tensors) == 0:
            raise ArgumentError("score_batch got no inputs: give a batch (N, C, ...) or a list of (C, ...) with N >= 1")
        elif all(isinstance(t, np.ndarray) for t in tensors):
            x = torch.from_numpy(np.stack(tensors))  # a fresh array: inputs may be read-only (Ray's zero-copy)
        else:
            x = torch.stack([torch.as_tensor(t) for t in tensors])
        x = x.to(self.device, dtype=torch.float32)
        if self.ood is None:
            feats, logits = None, self.model(x)
        else:
            feats, logits = features_and_logits(self.model, x)
        if self.views:  # the card's test-time views; the OOD score stays on the input itself
            probs = tta_probabilities(self.model, x, self.views, logits=logits).cpu().numpy()
        else:
            probs = torch.softmax(logits.double(), dim=1).cpu().numpy()  # float64: sums to 1 within 1e-15
        if feats is None:
            return probs, None
        scores = self.ood.scores(feats.double().cpu().numpy(), logits.double().cpu().numpy())[self.ood_method]
        return probs, scores

    def predict_batch(self, tensors: torch.Tensor | Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
        """Class probabilities ``(N, K)`` (float64) of preprocessed inputs ``(N, C, ...)`` or a list of ``(C, ...)``."""
        return self.score_batch(tensors)[0]

    def is_out_of_distribution(self, score: float | None) -> bool | None:
        """``score`` above the calibrated threshold (``None`` when there is no score)."""
        if score is None or self.ood is None:
            return None
        return bool(score > self.ood.thresholds[self.ood_method])

    def check(self, scan: Scan, allow_other_domain: bool | None = None) -> list[str]:
        """The training-domain header checks (:func:`medtl.guard.check_scan`): raise
        :class:`~medtl.errors.DomainError` on a mismatch unless allowed (argument, else the
        predictor's ``allow_other_domain``); return notes."""
        return self.check_header(scan.modality, photometric_kind(scan), scan.source or "this scan",
                                 scan.photometric, allow_other_domain, blank=is_blank(scan))

    def check_header(self, modality: str | None, kind: str, where: str, photometric: str = "",
                     allow_other_domain: bool | None = None, blank: bool = False) -> list[str]:
        """:meth:`check` from header facts alone (batch scoring's workers send them back)."""
        from medtl.errors import DomainError

        try:
            return check_header(self.card.get("domain"), modality, kind, where, photometric, blank=blank)
        except DomainError as exc:
            if not (self.allow_other_domain if allow_other_domain is None else allow_other_domain):
                raise
            return [f"predicted despite the training-domain check (override): {exc.reason}"]

    def decide(self, probs: Sequence[float] | np.ndarray) -> tuple[str, str]:
        """``(predicted, decision)`` for one probability vector (see :class:`Prediction`)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != (len(self.class_names),):
            raise ArgumentError(f"probs of shape {p.shape}: give one probability per class of this model "
                                f"({len(self.class_names)}: {', '.join(_class_texts(list(self.class_names)).values())})")
        if not np.isfinite(p).all():  # argmax of NaNs is class 0: a decision nobody made
            raise MedtlError("the model gave no probability for this study (NaN; non-finite input or a broken "
                             "model): no decision")
        predicted = self.class_names[int(np.argmax(p))]
        if self.positive_class is None:
            return predicted, predicted
        i_pos = self.class_names.index(self.positive_class)
        other = self.class_names[1 - i_pos]
        return predicted, self.positive_class if p[i_pos] >= self.threshold else other

    def predict(self, scan_or_path: Any, saliency: str | bool | None = None, series: str | int | None = None,
                target: int | None = None, allow_other_domain: bool | None = None,
                progress: bool = False) -> Prediction:
        """Score one study; with ``saliency`` (``True`` for the default method, or a name of
        ``medtl.explain.METHODS``) also compute a saliency map in the scan's geometry (for class
        index ``target``, default the decision); ``progress``: a progress bar for occlusion's windows.

        ``series`` picks a series in a DICOM folder or zip (index or SeriesInstanceUID).
        """
        scan = self._as_scan(scan_or_path, series)
        notes = self.check(scan, allow_other_domain)
        prepared = None
        if saliency:  # one preprocessing for the score and the map (with the grid the map is brought back from)
            from medtl.explain import prepare

            _, x, grid_affine = prepare(self.preprocessing, scan)
            prepared = (x, grid_affine)
        else:
            x = self.preprocess(scan)
        probs, scores = self.score_batch(x[None])
        probs = probs[0]
        score = None if scores is None else float(scores[0])
        predicted, decision = self.decide(probs)
        flagged = self.is_out_of_distribution(score)
        warnings = [OOD_MESSAGE] if flagged else []
        warnings += self.model_warnings + [n for n in notes if "override" in n]
        pred = Prediction(
            probabilities={c: float(v) for c, v in zip(self.class_names, probs)},
            predicted=predicted, decision=decision, threshold=self.threshold, positive_class=self.positive_class,
            source=scan.source or "in-memory scan", shape=list(scan.shape),
            preprocessing=self.preprocessing.to_dict(), preprocessing_text=describe_preprocessing(self.preprocessing),
            ood_score=score, ood_method=self.ood_method,
            ood_threshold=None if self.ood is None else self.ood.thresholds[self.ood_method],
            out_of_distribution=flagged, warnings=warnings)
        if saliency:
            if target is None:  # explain what the user is told: the decision
                target = self.class_names.index(decision)
            pred.saliency, pred.saliency_info = self._saliency(scan, None if saliency is True else saliency, target,
                                                               probs, prepared, progress)
        return pred

    def saliency(self, scan: Scan, method: str | None = None, target: int | None = None,
                 probabilities: Sequence[float] | np.ndarray | None = None) -> tuple[Scan, dict[str, Any]]:
        """Saliency map of ``scan`` (same geometry as the scan) and a dict describing it.

        ``method``: a name of ``medtl.explain.METHODS``, default ``medtl.explain.DEFAULT_METHOD``.
        The map's metadata name the method, the class explained with its probability and the
        model, so a PNG written from it (:func:`write_saliency`) is labelled; ``note`` says when the map is
        flat (the same everywhere, so it shows nothing). With test-time views
        in the card the map explains the input itself and the probability is the views' average
        (the one :meth:`predict` reports); ``probabilities``, that prediction's, spare scoring the scan again.
        """
        return self._saliency(scan, method, target, probabilities, None)

    def _saliency(self, scan: Scan, method: str | None, target: int | None,
                  probabilities: Sequence[float] | np.ndarray | None, prepared: tuple[torch.Tensor, np.ndarray] | None,
                  progress: bool = False) -> tuple[Scan, dict[str, Any]]:
        try:
            from medtl.explain import CAM_KINDS, DEFAULT_METHOD, method_title, saliency_for_scan
        except ImportError as exc:
            raise MedtlError(f"saliency maps need medtl.explain, which cannot be imported ({exc})") from None
        method = method or DEFAULT_METHOD
        sal, info = saliency_for_scan(self.model, self.preprocessing, scan, method=method, target=target,
                                      prepared=prepared, progress=progress)
        info = dict(info or {})
        chosen = int(info.get("target", 0))
        if probabilities is not None:  # the label gives the probability the user is told
            info["probabilities"] = [float(p) for p in probabilities]
        elif self.views:  # the map explains the input itself; the probability told is the views' average
            info["probabilities"] = self.score_batch(self.preprocess(scan)[None])[0][0].tolist()
        info.update(title=method_title(method), class_name=self.class_names[chosen],
                    probability=float(info["probabilities"][chosen]), model=self.model_id)
        if not np.asarray(sal.array).any():  # normalised per map: a constant map comes back all zeros
            other = f" (e.g. {DEFAULT_METHOD})" if method != DEFAULT_METHOD else ""
            why = ("its feature grid is too coarse for this input, e.g. one voxel" if method in CAM_KINDS else
                   f"the probability of {self.class_names[chosen]} does not move when the input changes, e.g. "
                   "saturated at 0 or 1")
            info["note"] = (f"the saliency map ({info['title']}) is the same everywhere ({why}): it locates nothing; "
                            f"choose another method{other}")
        sal.metadata.update(saliency_title=info["title"], saliency_class=info["class_name"],
                            saliency_probability=info["probability"], saliency_model=self.model_id)
        return sal, info

    def _as_scan(self, x: Any, series: str | int | None) -> Scan:
        if isinstance(x, Scan):
            return x
        if isinstance(x, (str, os.PathLike)):
            from medtl.io import load_scan

            return load_scan(x, series=series)
        from medtl.transforms import as_scan

        return as_scan(np.asarray(x), spatial_dims=self.spatial_dims)

    # --- description ---------------------------------------------------------------------------

    def describe(self) -> str:
        """Model card summary for people: what it was trained on, how well it did, what it is for."""
        card = self.card
        m = card.get("model", {})
        w = m.get("weights")
        start = (w.get("description") or w.get("name") or w.get("file")) if isinstance(w, dict) else w
        lines = [f"Model: {card.get('name', '?')} - {m.get('arch', '?')}, {m.get('spatial_dims', '?')}D, "
                 f"{m.get('in_channels', '?')} input channel(s), start weights {start or 'none (scratch)'}; "
                 f"trained {card.get('created', '?')} with medtl {card.get('medtl_version', '?')}"]
        shown = _class_texts(list(self.class_names))
        lines.append(f"Classes: {', '.join(shown.values())}")
        if self.positive_class is not None:
            lines.append(f"Decision: '{self.positive_class}' when its probability >= {self.threshold:.4f}")
        data = card.get("training", {}).get("data", {})
        if data:
            counts = "; ".join(f"{split} " + ", ".join(f"{shown.get(c, c)}: {n}" for c, n in per.items())
                               for split, per in (data.get("counts") or {}).items())
            filt = data.get("filter") or {}
            where = f", filter {filt}" if filt else ""
            lines.append(f"Trained on: {data.get('source', '?')} ({data.get('format', '?')}{where}); {counts}")
        test = card.get("metrics", {}).get("test")
        if test:
            names = {"auc": "macro auc (one-vs-rest)" if len(self.class_names) > 2 else "auc",
                     "qwk": "quadratic weighted kappa"}
            parts = []
            for k in ("auc", "accuracy", "qwk", "sensitivity", "specificity"):
                if isinstance(test.get(k), (int, float)):
                    parts.append(f"{names.get(k, k)} {test[k]:.3f}{ci_text(test, k)}")
                elif k == "qwk" and k in test:  # null: the test cases and their decisions are all of one class
                    parts.append(f"{names[k]} undefined (every case and decision of one class)")
                elif k in test:  # null in the card: the test set had no case of a class it needs
                    parts.append(f"{k} undefined (a class absent from the test set)")
            lines.append(f"Test metrics (n={test.get('n', '?')}): " + ", ".join(parts))
            per_class = test.get("per_class") or {}  # more than two classes, cards from when medtl wrote it
            if per_class:
                lines.append("Per class (test, one-vs-rest): " + "; ".join(
                    f"{shown.get(c, c)} " + ", ".join(
                        f"{k} {e[k]:.3f}" if isinstance(e.get(k), (int, float)) else f"{k} undefined"
                        for k in ("sensitivity", "ppv", "auc")) + f" (n={e.get('support', '?')})"
                    for c, e in per_class.items()))
        else:
            lines.append("Test metrics: none recorded")
        lines.append(f"Preprocessing: {describe_preprocessing(self.preprocessing)}")
        lines.append(self.describe_domain())
        lines.append(self.describe_ood())
        if card.get("intended_use"):
            lines.append(f"Intended use: {card['intended_use']}")
        if card.get("limitations"):
            lines.append(f"Limitations: {card['limitations']}")
        return "\n".join(lines)

    def describe_domain(self) -> str:
        """One line for people: what kind of scan the header checks accept (:mod:`medtl.guard.domain`)."""
        domain = self.card.get("domain")
        if not domain:
            return "Training domain: not recorded (trained before medtl 0.2): no header checks"
        kinds = " / ".join(domain.get("photometric") or []) or "any"
        if not domain.get("families"):
            return (f"Training domain: {kinds} images, no modality recorded (its images carried none and "
                    "data.modality was not set): a scan of another modality is not refused by its header")
        via = {"headers": "from the images' headers", "config": "declared in data.modality"}.get(domain.get("source"), "")
        return (f"Training domain: {' / '.join(domain['families'])} ({via}), {kinds} images: a scan of another "
                "modality or colour is refused")

    def describe_ood(self) -> str:
        """One line for people: what the out-of-distribution score is, where its threshold comes from."""
        if self.ood is None:
            return f"Out-of-distribution check: none ({self._no_ood_reason})"
        n = self.ood.n_calibration
        on = f"{n} validation images" if n else "the validation split"
        if 0 < n < FEW_VALIDATION:
            on += ", few: a rough threshold"
        return (f"Out-of-distribution check: {self.ood_method} score of the network's pooled features (higher = "
                f"further from the training images); a scan scoring above {self.ood.thresholds[self.ood_method]:.4g} "
                f"(the {self.ood.quantile:g} quantile over {on}) is flagged: its probability is not meaningful")


def check_saliency_output(path: str | os.PathLike) -> None:
    """Refuse ``path`` when it holds a file that is not a saliency map medtl wrote (PNG text chunks
    ``method`` and ``model``; NIfTI description ``medtl:modality=SAL``): a user's picture or scan, the
    input itself, is never replaced. Only the file's header is read."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    ours = False
    if path.is_file():
        try:
            if path.name.lower().endswith(".png"):
                from PIL import Image

                with Image.open(path) as im:
                    ours = im.format == "PNG" and {"method", "model"} <= set(im.info)
            else:
                import nibabel as nib

                from medtl.explain.geometry import SALIENCY_MODALITY

                descrip = bytes(nib.load(path).header["descrip"])
                ours = descrip.startswith(f"medtl:modality={SALIENCY_MODALITY}".encode())
        except Exception:  # noqa: BLE001 - unreadable as a map medtl wrote: not ours
            ours = False
    if not ours:
        raise MedtlError(f"{path}: exists and is not a saliency map medtl wrote; refusing to replace it: "
                         "move it or choose another output name")


def write_saliency(path: str | os.PathLike, scan: Scan, saliency_map: Scan, alpha: float | None = None,
                   labelled: bool = False, warning: str = "") -> Path:
    """Save a saliency map: ``.nii``/``.nii.gz`` -> NIfTI in the scan's geometry; ``.png`` -> an
    overlay on the scan (2D: the image; 3D: the axial slice where the map peaks, radiological view,
    :func:`medtl.explain.overlay_view`; its number is in the PNG's ``slice`` text chunk). Atomic.

    The PNG is ``medtl.explain.heatmap_overlay`` (perceptual colour map, low values
    transparent, the scan's own window underneath), one pixel per scan pixel; the method,
    class, probability and model (from the map's metadata, as :meth:`Predictor.saliency`
    sets them) go into PNG text chunks. ``labelled=True`` writes the picture for people
    instead: a colour bar and those facts rendered as text beside the overlay. ``warning`` (e.g.
    :data:`OOD_WARNING`) goes into the picture's text too: a ``warning`` chunk, and a last line of the
    labelled picture.
    """
    from medtl.explain import (SALIENCY_ALPHA, display_aspect, display_slice, heatmap_overlay, labelled_overlay,
                               overlay_view, save_overlay_png, save_saliency_nifti)

    path = Path(path)
    name = path.name.lower()
    check_saliency_output(path)
    if name.endswith((".nii", ".nii.gz")):
        from medtl._fileutil import atomic_path

        with atomic_path(path) as tmp:
            save_saliency_nifti(saliency_map, tmp)
        return path
    if not name.endswith(".png"):
        raise MedtlError(f"{path}: saliency output must end in .png (overlay) or .nii/.nii.gz (map)")
    image, sal, index = overlay_view(scan, saliency_map)
    rgb = heatmap_overlay(display_slice(image.array, index, "axial"),
                          display_slice(np.asarray(sal.array), index, "axial"),
                          window=scan.default_window, alpha=SALIENCY_ALPHA if alpha is None else alpha)
    meta = saliency_map.metadata
    facts = {"method": str(meta.get("saliency_title") or meta.get("saliency_method") or "saliency"),
             "class": str(meta.get("saliency_class", meta.get("saliency_target", "?"))),
             "probability": meta.get("saliency_probability"), "model": str(meta.get("saliency_model") or "?")}
    if not scan.is_2d:
        facts["slice"] = f"axial {index + 1} of {image.shape[2]}"
    prob = facts["probability"]
    if labelled:
        where = "" if scan.is_2d else f" (axial slice {index + 1} of {image.shape[2]})"
        rgb = labelled_overlay(rgb, method=facts["method"] + where, class_name=facts["class"],
                               probability=float("nan") if prob is None else float(prob), model=facts["model"],
                               aspect=display_aspect(image, "axial"), warning=warning)
    if warning:
        facts["warning"] = warning
    return save_overlay_png(path, rgb, text={k: "" if v is None else str(v) for k, v in facts.items()})
