"""At the end of training: what the model card needs so that serving knows when not to answer.

- the training domain (:func:`medtl.guard.record_domain`) from a sample of training scans'
  headers, plus intensity statistics of the preprocessed network inputs;
- the out-of-distribution detector fitted on (a class-stratified subset of) the training
  split's penultimate features, its thresholds calibrated on the validation split, saved
  as ``ood.safetensors``;
- the degenerate-output verdict on the validation split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtl.config import Config
from medtl.guard import check_outputs, features_and_logits, fit, record_domain
from medtl.guard.ood import DEFAULT_METHOD, FEW_VALIDATION, MAX_BANK

log = logging.getLogger(__name__)

#: Training scans whose headers are read for the domain record.
DOMAIN_SAMPLE = 24
OOD_FILE = "ood.safetensors"


@torch.no_grad()
def embed(model: nn.Module, loader: Any, device: torch.device) -> dict[str, np.ndarray]:
    """Pooled features, logits, labels and per-image input statistics over ``loader``."""
    model.eval()
    feats, logits, labels, stats = [], [], [], []
    for batch in loader:
        x = batch["image"].to(device, dtype=torch.float32)
        f, lg = features_and_logits(model, x)
        if f is None:
            raise ValueError(f"{type(model).__name__} exposes no pooled features for the OOD score")
        feats.append(f.float().cpu().numpy())
        logits.append(lg.float().cpu().numpy())
        labels.append(np.asarray(batch["label"]).reshape(-1))
        flat = x.flatten(1)
        stats.append(torch.stack([flat.mean(1), flat.std(1)], 1).cpu().numpy())
    return {"features": np.concatenate(feats), "logits": np.concatenate(logits),
            "labels": np.concatenate(labels).astype(int), "stats": np.concatenate(stats)}


def _subset(items: list[dict], n: int, seed: int) -> list[dict]:
    if len(items) <= n:
        return list(items)
    rng = np.random.default_rng(seed)
    labels = np.array([int(it["label"]) for it in items])
    keep: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        take = max(1, round(n * len(idx) / len(items)))
        keep.extend(rng.choice(idx, min(take, len(idx)), replace=False).tolist())
    return [items[i] for i in sorted(keep)]


def _domain_scans(items: list[dict], cfg: Config) -> list:
    from medtl.transforms import as_scan

    scans = []
    for it in _subset(items, DOMAIN_SAMPLE, cfg.train.seed):
        try:
            scans.append(as_scan(it["image"], spatial_dims=cfg.preprocess.spatial_dims))
        except Exception as exc:  # a training file that loaded once must not stop the card
            log.warning("domain record: skipped one training item (%s)", type(exc).__name__)
    return scans


#: Validation positives with lesion masks whose saliency is scored for the model card.
SALIENCY_CASES = 20


def saliency_entry(model: nn.Module, prep: Any, cohort: Any, positive: int) -> dict[str, Any] | None:
    """The card's ``saliency`` entry (default method, its pointing game) when validation
    positives have lesion masks (a manifest ``mask`` column), else ``None``."""
    from medtl.explain import saliency_card

    root = Path(cohort.source).parent if cohort.source else Path(".")
    cases = [(it["image"], root / it["mask"]) for it in cohort.split("val")
             if int(it["label"]) == positive and it.get("mask") and isinstance(it["image"], (str, Path))]
    if not cases:
        return None
    model.eval()
    return saliency_card(model, prep, positive, cases[:SALIENCY_CASES])


def guard_entries(model: nn.Module, cfg: Config, cohort: Any, prep: Any, loader_for: Any, device: torch.device,
                  out: Path, val_probs: np.ndarray | None, val_labels: np.ndarray | None,
                  val_auc_ci: tuple[float, float] | None) -> dict[str, Any]:
    """``{"domain": ..., "ood": ..., "degenerate": ...}`` card entries; writes ``out/ood.safetensors``.
    Without a score (fewer than 2 validation images) ``ood`` is ``None`` and ``ood_unavailable`` says why.

    ``loader_for(dataset)`` builds an evaluation DataLoader over a dataset (no augmentation).
    """
    from medtl.data import build_dataset

    train_items = cohort.split("train")
    val_items = cohort.split("val")
    domain = record_domain(_domain_scans(train_items, cfg), cfg.preprocess.spatial_dims, cfg.preprocess.channels,
                           declared_modality=cfg.data.modality, declared_body_part=cfg.data.body_part)
    if not domain["families"]:
        log.warning("%s: the training images record no modality (PNG, NumPy or NIfTI files) and data.modality is not "
                    "set, so the model cannot refuse a scan of another kind by its header; set data.modality "
                    "(e.g. DX for chest X-rays, CT, MR)", out)
    tr = embed(model, loader_for(build_dataset(_subset(train_items, MAX_BANK, cfg.train.seed), prep.transforms(),
                                               cache="none")), device)
    means = tr["stats"][:, 0]
    domain["input_intensity"] = {"mean": float(means.mean()), "sd_within_image": float(tr["stats"][:, 1].mean()),
                                 "mean_p01": float(np.quantile(means, 0.01)), "mean_p99": float(np.quantile(means, 0.99))}
    entries: dict[str, Any] = {"domain": domain}
    if len(val_items) >= 2:
        detector = fit(tr["features"], tr["labels"], seed=cfg.train.seed)
        va = embed(model, loader_for(build_dataset(val_items, prep.transforms(), cache="none")), device)
        detector.calibrate(va["features"], va["logits"])
        detector.save(out / OOD_FILE)
        entries["ood"] = detector.card_entry(DEFAULT_METHOD, OOD_FILE)
        if len(val_items) < FEW_VALIDATION:
            log.warning("%s: only %d validation images: the out-of-distribution threshold (their %g quantile) is "
                        "about their largest score, and whether the model beats chance is not judged (fewer than "
                        "%d); a validation split of a few dozen images makes both meaningful",
                        out, len(val_items), detector.quantile, FEW_VALIDATION)
    else:
        entries["ood"] = None
        entries["ood_unavailable"] = (f"{len(val_items)} validation image(s): its threshold needs at least 2, "
                                      "so it was not fitted")
        log.warning("%s: out-of-distribution score not fitted (%s); predictions from this run carry none "
                    "(give the cohort a validation split of a few dozen images)", out, entries["ood_unavailable"])
    verdict = check_outputs(val_probs, val_labels, val_auc_ci) if val_probs is not None else None
    entries["degenerate"] = verdict
    return entries
