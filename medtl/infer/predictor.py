"""Single-study prediction with a trained run: class probabilities, the decision at the model
card's threshold, the preprocessing used, and optionally a saliency map.

    p = Predictor.from_run("runs/tiny")
    pred = p.predict("scan.dcm", saliency="gradcam")
    pred.probabilities, pred.decision, pred.saliency

The preprocessing is the model card's (``card["preprocessing"]``, the pipeline training
evaluated with); there is no second copy of it here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtl.errors import MedtlError
from medtl.io.scan import Scan
from medtl.runs import card_hash, load_run, resolve_device
from medtl.transforms import Preprocessing

__all__ = ["Prediction", "Predictor", "describe_preprocessing", "write_saliency"]


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (the saliency map itself is left out; its method is kept)."""
        out = {k: getattr(self, k) for k in ("source", "shape", "probabilities", "predicted", "decision",
                                             "threshold", "positive_class", "preprocessing")}
        out["preprocessing_text"] = self.preprocessing_text
        if self.saliency is not None:
            out["saliency"] = {k: v for k, v in self.saliency_info.items() if _jsonable(v)}
        return out


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, tuple, dict))


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


class Predictor:
    """A trained model with its card and preprocessing, ready to score studies.

    Build it with :meth:`from_run`. ``predict`` scores one study (path, :class:`Scan` or
    array); ``predict_batch`` scores preprocessed tensors (what batch scoring uses).
    """

    def __init__(self, model: nn.Module, card: dict[str, Any], preprocessing: Preprocessing,
                 device: str | torch.device = "cpu", run_dir: str | os.PathLike | None = None) -> None:
        self.model = model.eval()
        self.card = card
        self.preprocessing = preprocessing
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
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
    def from_run(cls, path: str | os.PathLike, device: str = "auto") -> "Predictor":
        """Load a run directory written by ``medtl train`` (weights, model card, preprocessing)."""
        dev = resolve_device(device)
        model, card, prep = load_run(path, device=str(dev))
        return cls(model, card, prep, device=dev, run_dir=path)

    @property
    def spatial_dims(self) -> int:
        return int(self.preprocessing.spatial_dims)

    # --- scoring -------------------------------------------------------------------------------

    def preprocess(self, x: Any) -> torch.Tensor:
        """Path | Scan | array -> network input ``(C, ...)`` with the card's pipeline."""
        return self.preprocessing(x)

    @torch.no_grad()
    def predict_batch(self, tensors: torch.Tensor | Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
        """Class probabilities ``(N, K)`` (float64) of preprocessed inputs ``(N, C, ...)`` or a list of ``(C, ...)``."""
        if isinstance(tensors, torch.Tensor):
            x = tensors
        elif all(isinstance(t, np.ndarray) for t in tensors):
            x = torch.from_numpy(np.stack(tensors))  # a fresh array: inputs may be read-only (Ray's zero-copy)
        else:
            x = torch.stack([torch.as_tensor(t) for t in tensors])
        logits = self.model(x.to(self.device, dtype=torch.float32))
        return torch.softmax(logits.double(), dim=1).cpu().numpy()  # float64: sums to 1 within 1e-15

    def decide(self, probs: Sequence[float]) -> tuple[str, str]:
        """``(predicted, decision)`` for one probability vector (see :class:`Prediction`)."""
        p = np.asarray(probs, dtype=np.float64)
        predicted = self.class_names[int(np.argmax(p))]
        if self.positive_class is None:
            return predicted, predicted
        i_pos = self.class_names.index(self.positive_class)
        other = self.class_names[1 - i_pos]
        return predicted, self.positive_class if p[i_pos] >= self.threshold else other

    def predict(self, scan_or_path: Any, saliency: str | None = None, series: str | int | None = None,
                target: int | None = None) -> Prediction:
        """Score one study; with ``saliency`` (``"gradcam"``, ``"gradcam++"``, ``"occlusion"``) also
        compute a saliency map in the scan's geometry (for class index ``target``, default the decision).

        ``series`` picks a series in a DICOM folder or zip (index or SeriesInstanceUID).
        """
        scan = self._as_scan(scan_or_path, series)
        x = self.preprocess(scan)
        probs = self.predict_batch(x[None])[0]
        predicted, decision = self.decide(probs)
        pred = Prediction(
            probabilities={c: float(v) for c, v in zip(self.class_names, probs)},
            predicted=predicted, decision=decision, threshold=self.threshold, positive_class=self.positive_class,
            source=scan.source or "in-memory scan", shape=list(scan.shape),
            preprocessing=self.preprocessing.to_dict(), preprocessing_text=describe_preprocessing(self.preprocessing))
        if saliency:
            if target is None:  # explain what the user is told: the decision
                target = self.class_names.index(decision)
            pred.saliency, pred.saliency_info = self.saliency(scan, saliency, target)
        return pred

    def saliency(self, scan: Scan, method: str = "gradcam", target: int | None = None) -> tuple[Scan, dict[str, Any]]:
        """Saliency map of ``scan`` (same geometry as the scan) and a dict describing it."""
        try:
            from medtl.explain import saliency_for_scan
        except ImportError as exc:
            raise MedtlError(f"saliency maps need medtl.explain, which cannot be imported ({exc})") from None
        sal, info = saliency_for_scan(self.model, self.preprocessing, scan, method=method, target=target)
        return sal, dict(info or {})

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
        lines.append(f"Classes: {', '.join(self.class_names)}")
        if self.positive_class is not None:
            lines.append(f"Decision: '{self.positive_class}' when its probability >= {self.threshold:.4f}")
        data = card.get("training", {}).get("data", {})
        if data:
            counts = "; ".join(f"{split} " + ", ".join(f"{c}: {n}" for c, n in per.items())
                               for split, per in (data.get("counts") or {}).items())
            filt = data.get("filter") or {}
            where = f", filter {filt}" if filt else ""
            lines.append(f"Trained on: {data.get('source', '?')} ({data.get('format', '?')}{where}); {counts}")
        test = card.get("metrics", {}).get("test")
        if test:
            ci = test.get("ci", {})
            parts = []
            for k in ("auc", "accuracy", "sensitivity", "specificity"):
                if isinstance(test.get(k), (int, float)):
                    span = f" (95% CI {ci[k][0]:.3f}-{ci[k][1]:.3f})" if k in ci else ""
                    parts.append(f"{k} {test[k]:.3f}{span}")
            lines.append(f"Test metrics (n={test.get('n', '?')}): " + ", ".join(parts))
        else:
            lines.append("Test metrics: none recorded")
        lines.append(f"Preprocessing: {describe_preprocessing(self.preprocessing)}")
        if card.get("intended_use"):
            lines.append(f"Intended use: {card['intended_use']}")
        if card.get("limitations"):
            lines.append(f"Limitations: {card['limitations']}")
        return "\n".join(lines)


def write_saliency(path: str | os.PathLike, scan: Scan, saliency_map: Scan, alpha: float = 0.4) -> Path:
    """Save a saliency map: ``.nii``/``.nii.gz`` -> NIfTI in the scan's geometry; ``.png`` -> an
    overlay on the scan (2D: the image; 3D: the middle axial slice, radiological view). Atomic."""
    from medtl.explain import display_slice, overlay, save_overlay_png, save_saliency_nifti, to_display_orientation

    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        from medtl._fileutil import atomic_path

        with atomic_path(path) as tmp:
            save_saliency_nifti(saliency_map, tmp)
        return path
    if not name.endswith(".png"):
        raise MedtlError(f"{path}: saliency output must end in .png (overlay) or .nii/.nii.gz (map)")
    image, sal = scan.to_grayscale(), saliency_map
    if not scan.is_2d:  # same affine, so the same reorientation for both
        image, sal = to_display_orientation(image), to_display_orientation(saliency_map)
    index = image.shape[2] // 2
    rgb = overlay(display_slice(image.array, index, "axial"), display_slice(np.asarray(sal.array), index, "axial"),
                  window=scan.default_window, alpha=alpha)
    return save_overlay_png(path, rgb)
