"""Out-of-distribution scores on a trained classifier's penultimate features and logits.

Four established scores, all "higher = further from the training data":

- ``msp``: ``1 - max softmax`` (Hendrycks & Gimpel, 2017), the baseline;
- ``energy``: ``-logsumexp(logits)`` (Liu et al., 2020);
- ``mahalanobis``: smallest squared Mahalanobis distance of the pooled features to
  a class mean, with one covariance shared by the classes (Lee et al., 2018) and
  Ledoit-Wolf shrinkage so that a few hundred images and 1280 features still give an
  invertible matrix;
- ``knn``: distance of the L2-normalised features to their k-th nearest training
  feature (Sun et al., 2022), over a bank of at most :data:`MAX_BANK` training images.

:func:`fit` takes the training features, :meth:`OODDetector.calibrate` sets each
score's threshold at a quantile (:data:`DEFAULT_QUANTILE`, 97.5 %) of the validation scores, so
about 2.5 % of in-distribution images are flagged by construction. Which score is used by default
is decided by ``benchmarks/ood.py`` (:data:`DEFAULT_METHOD`). The statistics are saved
as ``ood.safetensors`` beside the model (no pickle).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_METHOD", "METHODS", "OODDetector", "features_and_logits", "fit", "logit_scores"]

METHODS = ("mahalanobis", "knn", "energy", "msp")
#: The score prediction reports; chosen by ``benchmarks/ood.py`` (docs/benchmarks.md).
DEFAULT_METHOD = "mahalanobis"
#: Largest training bank kept for the k-NN score (a random, class-stratified subset).
MAX_BANK = 2048
KNN_K = 10
#: Quantile of the validation scores used as each score's threshold. 0.975 rather than 0.95: a 95th
#: percentile of a few hundred validation images flagged 5.8 % of PneumoniaMNIST's test split;
#: 0.975 flags 2.1 % and still flags 97-100 % of the far-OOD sets (benchmarks/ood.py).
DEFAULT_QUANTILE = 0.975
#: Below this many calibration (validation) images a threshold is said to be rough: their 0.975
#: quantile is about their largest score.
FEW_VALIDATION = 20


def features_and_logits(model: Any, x: Any) -> tuple[Any, Any]:
    """``(pooled features, logits)`` of a medtl backbone in one forward pass.

    ``model(x)`` is ``head(drop(pooled(x)))`` for every medtl backbone, so the logits are
    the ones a plain call gives. A model without ``pooled``/``head`` gives ``(None, model(x))``.
    """
    pooled, head = getattr(model, "pooled", None), getattr(model, "head", None)
    if pooled is None or head is None:
        return None, model(x)
    f = pooled(x)
    return f, head(model.drop(f))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logit_scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """``msp`` and ``energy`` of logits ``(N, K)`` (higher = more out-of-distribution)."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1)
    lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
    return {"msp": 1.0 - _softmax(x).max(axis=1), "energy": -lse}


def _normalise(f: np.ndarray) -> np.ndarray:
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


@dataclass
class OODDetector:
    """Feature statistics of the training set, and per-score thresholds once calibrated."""

    means: np.ndarray  # (K, D) class means of the pooled features
    precision: np.ndarray  # (D, D) inverse of the shared, shrunk covariance
    bank: np.ndarray  # (M, D) L2-normalised training features for k-NN
    k: int = KNN_K
    thresholds: dict[str, float] = field(default_factory=dict)
    quantile: float = DEFAULT_QUANTILE
    #: validation images the thresholds were calibrated on (0: unknown, a card from before it was recorded)
    n_calibration: int = 0

    def scores(self, features: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
        """Every score of :data:`METHODS` for ``features (N, D)`` and ``logits (N, K)``."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.means.shape[1]:
            raise ValueError(f"features must be (N, {self.means.shape[1]}), got {f.shape}")
        out = logit_scores(logits)
        # (x - mu)^T P (x - mu) for each class, min over classes
        d = f[:, None, :] - self.means[None]  # (N, K, D)
        out["mahalanobis"] = np.einsum("nkd,de,nke->nk", d, self.precision, d).min(axis=1)
        sims = _normalise(f) @ self.bank.T  # cosine similarity to the bank
        k = min(self.k, self.bank.shape[0])
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
        out["knn"] = np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))  # Euclidean distance of unit vectors
        return out

    def calibrate(self, features: np.ndarray, logits: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> None:
        """Each score's threshold := its ``quantile`` over in-distribution (validation) images."""
        if len(features) < 2:
            raise ValueError("calibrating the out-of-distribution thresholds needs at least 2 validation images")
        self.quantile = float(quantile)
        self.n_calibration = int(len(features))
        self.thresholds = {m: float(np.quantile(s, quantile)) for m, s in self.scores(features, logits).items()}

    def flags(self, scores: dict[str, np.ndarray], method: str = DEFAULT_METHOD) -> np.ndarray:
        """``True`` where ``method``'s score is above its calibrated threshold."""
        if method not in self.thresholds:
            raise ValueError(f"no threshold for {method!r}: calibrate first (methods: {', '.join(METHODS)})")
        return np.asarray(scores[method]) > self.thresholds[method]

    # --- persistence -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the statistics (safetensors, atomically); thresholds belong in the model card."""
        import torch
        from safetensors.torch import save_file

        from medtl._fileutil import atomic_path

        tensors = {"means": torch.from_numpy(self.means.astype(np.float32)),
                   "precision": torch.from_numpy(self.precision.astype(np.float32)),
                   "bank": torch.from_numpy(self.bank.astype(np.float16))}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"k": str(self.k)})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, card_entry: dict[str, Any]) -> "OODDetector":
        """Statistics from ``path`` with the thresholds recorded in the model card's ``ood`` entry."""
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            arrays = {k: fh.get_tensor(k) for k in ("means", "precision", "bank")}
        return cls(means=arrays["means"].astype(np.float64), precision=arrays["precision"].astype(np.float64),
                   bank=arrays["bank"].astype(np.float32), k=int(meta.get("k", KNN_K)),
                   thresholds={k: float(v) for k, v in card_entry.get("thresholds", {}).items()},
                   quantile=float(card_entry.get("quantile", DEFAULT_QUANTILE)),
                   n_calibration=int(card_entry.get("n_calibration", 0)))

    def card_entry(self, method: str = DEFAULT_METHOD, file: str = "ood.safetensors") -> dict[str, Any]:
        """What the model card records: the method used, every threshold, the quantile and how many
        validation images it was taken over, the file."""
        return {"method": method, "thresholds": dict(self.thresholds), "quantile": self.quantile,
                "n_calibration": self.n_calibration, "file": file, "k": self.k, "bank_size": int(self.bank.shape[0])}


def fit(features: np.ndarray, labels: np.ndarray, seed: int = 0, max_bank: int = MAX_BANK) -> OODDetector:
    """Class means, shrunk shared covariance and a k-NN bank from training ``features (N, D)``."""
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    if f.ndim != 2 or len(f) != len(y) or len(f) < 2:
        raise ValueError(f"fit needs (N >= 2, D) features and N labels, got {f.shape} and {y.shape}")
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(axis=0) for c in classes])
    centred = f - means[np.searchsorted(classes, y)]
    lw = LedoitWolf(assume_centered=True).fit(centred)
    precision = lw.precision_
    rng = np.random.default_rng(seed)
    keep = np.arange(len(f)) if len(f) <= max_bank else np.sort(rng.choice(len(f), max_bank, replace=False))
    return OODDetector(means=means, precision=precision, bank=_normalise(f[keep]).astype(np.float32))
