"""Does the out-of-distribution guard tell the training domain from everything else?

For two models users meet, the PneumoniaMNIST chest X-ray recipe and the demo's chest-CT
nodule recipe (EfficientNet-Lite0 from its real ImageNet weights), this measures:

- the false-alarm rate of each OOD score at its validation-calibrated threshold on the
  model's own (in-distribution) test split;
- the AUROC of each score, in-distribution test vs each out-of-distribution set:
  the other model's data (CT slices vs chest X-rays), RetinaMNIST fundus photographs, and
  corrupted copies of the test split (heavy noise, blank, inverted, heavy blur);
- for every real DICOM file in ``../shared/data/dicom``: refused by the header checks,
  flagged by the default score, or passed.

    python benchmarks/ood.py                      # trains both models (CPU: ~15 min), then measures
    python benchmarks/ood.py --xray-run R1 --ct-run R2   # reuse runs written by `medtl train`

Prints the tables and writes ``benchmarks/results/ood.json``.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from medtl.errors import MedtlError
from medtl.guard import METHODS
from medtl.guard.ood import DEFAULT_QUANTILE
from medtl.infer import Predictor

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "out" / "ood"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)


def train_models(args: argparse.Namespace) -> dict[str, Path]:
    from medtl.config import load_config
    from medtl.demo.cohort import make_cohort
    from medtl.train.run import train

    runs = {}
    if args.xray_run:
        runs["xray"] = Path(args.xray_run)
    else:
        runs["xray"] = OUT / "xray"
        cfg = load_config("pneumoniamnist_effnet_lite0", [f"data.path={SHARED / 'medmnist' / 'pneumoniamnist.npz'}",
                                                          f"train.epochs={args.xray_epochs}", "eval.bootstrap=200"])
        train(cfg, runs["xray"], progress=False)
    if args.ct_run:
        runs["ct"] = Path(args.ct_run)
    else:
        manifest = make_cohort(OUT / "cohort", size="full")
        runs["ct"] = OUT / "ct"
        cfg = load_config("demo", [f"data.path={manifest}", "eval.bootstrap=200"])
        train(cfg, runs["ct"], progress=False)
    return runs


def _npz_split(name: str, split: str, limit: int, seed: int = 0) -> list[np.ndarray]:
    data = np.load(SHARED / "medmnist" / f"{name}.npz")
    images = data[f"{split}_images"]
    idx = np.random.default_rng(seed).permutation(len(images))[:limit]
    return [images[i] for i in sorted(idx)]


def _cohort_ct(split: str, site: str | None = None) -> list[Path]:
    import csv

    manifest = OUT / "cohort" / "manifest.csv"
    if not manifest.is_file():
        from medtl.demo.cohort import make_cohort

        make_cohort(OUT / "cohort", size="full")
    rows = [r for r in csv.DictReader(open(manifest)) if r["kind"] == "ct2d" and r["split"] == split
            and (site is None or r["site"] == site)]
    return [manifest.parent / r["path"] for r in rows]


def embed_inputs(predictor: Predictor, inputs: list) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and logits of inputs (arrays or paths) through the card's preprocessing."""
    from medtl.guard import features_and_logits

    xs = [predictor.preprocess(x) for x in inputs]
    feats, logits = [], []
    for i in range(0, len(xs), 64):
        x = torch.stack(xs[i:i + 64]).to(predictor.device)
        with torch.no_grad():
            f, lg = features_and_logits(predictor.model, x)
        feats.append(f.double().cpu().numpy())
        logits.append(lg.double().cpu().numpy())
    return np.concatenate(feats), np.concatenate(logits)


def scores_of(predictor: Predictor, inputs: list) -> dict[str, np.ndarray]:
    """Every OOD score of every input (arrays or paths), the header checks bypassed."""
    return predictor.ood.scores(*embed_inputs(predictor, inputs))


def corrupt(images: list[np.ndarray], kind: str, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for im in images:
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        span = hi - lo if hi > lo else 1.0
        if kind == "noise":
            b = a + rng.normal(0, 0.5 * span, a.shape)
        elif kind == "blank":
            b = np.full_like(a, lo + 0.5 * span)
        elif kind == "inverted":
            b = hi + lo - a
        elif kind == "blur":
            b = ndimage.gaussian_filter(a, sigma=max(a.shape) / 8)
        else:
            raise ValueError(kind)
        out.append(np.clip(b, lo, hi).astype(np.float32))
    return out


def ct_arrays(paths: list[Path]) -> list[np.ndarray]:
    from medtl.io import load_scan

    return [load_scan(p).array[:, :, 0].T.astype(np.float32) for p in paths]


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    y = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    return float(roc_auc_score(y, np.r_[id_scores, ood_scores]))


def dicom_verdicts(predictor: Predictor) -> list[dict]:
    """Refused / flagged / passed for every real DICOM file in ../shared/data/dicom."""
    from medtl.io import load_scan

    rows = []
    for path in sorted((SHARED / "dicom").glob("*.dcm")):
        try:
            scan = load_scan(path)
        except MedtlError as exc:
            rows.append({"file": path.name, "modality": "?", "verdict": "unreadable", "why": str(exc)[:120]})
            continue
        try:
            pred = predictor.predict(scan)
            verdict = "flagged" if pred.out_of_distribution else "passed"
            rows.append({"file": path.name, "modality": scan.modality, "verdict": verdict,
                         "score": pred.ood_score, "threshold": pred.ood_threshold})
        except MedtlError as exc:
            rows.append({"file": path.name, "modality": scan.modality, "verdict": "refused", "why": exc.__class__.__name__
                         + ": " + str(getattr(exc, "reason", exc))[:120]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xray-run", help="a PneumoniaMNIST run to reuse (else trained)")
    ap.add_argument("--ct-run", help="a demo-recipe run to reuse (else trained)")
    ap.add_argument("--xray-epochs", type=int, default=4)
    ap.add_argument("--limit", type=int, default=400, help="images per out-of-distribution set")
    ap.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE,
                    help="recalibrate each score's threshold at this quantile of the validation scores "
                         "(what training does with medtl.guard.ood.DEFAULT_QUANTILE)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ood.json"))
    args = ap.parse_args()
    refuse_foreign(args.out, SCRIPT)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    runs = train_models(args)
    xray = Predictor.from_run(runs["xray"], device="cpu")
    ct = Predictor.from_run(runs["ct"], device="cpu")

    pneu_val = _npz_split("pneumoniamnist", "val", 10_000)
    ct_val = ct_arrays(_cohort_ct("val", site="A"))
    for pred, val in ((xray, pneu_val), (ct, ct_val)):  # the thresholds training would set at --quantile
        pred.ood.calibrate(*embed_inputs(pred, val), quantile=args.quantile)
    pneu_test = _npz_split("pneumoniamnist", "test", 10_000)
    retina = _npz_split("retinamnist", "test", args.limit)
    ct_test = ct_arrays(_cohort_ct("test", site="A"))
    ct_any = ct_arrays(_cohort_ct("train"))[: args.limit]
    sets = {
        "xray": {"id": pneu_test, "ood": {"CT slices (sample cohort)": ct_any, "RetinaMNIST fundus": retina}},
        "ct": {"id": ct_test, "ood": {"chest X-rays (PneumoniaMNIST)": pneu_test[: args.limit],
                                      "RetinaMNIST fundus": retina}},
    }
    results: dict = {"command": shlex.join(["python", "benchmarks/ood.py", *sys.argv[1:]]), "machine": platform.platform(),
                     "runs": {k: str(v) for k, v in runs.items()}, "models": {}}
    for name, pred in (("xray", xray), ("ct", ct)):
        id_imgs = sets[name]["id"]
        ood_sets = dict(sets[name]["ood"])
        for kind in ("noise", "blank", "inverted", "blur"):
            ood_sets[f"test split, {kind}"] = corrupt(id_imgs[: args.limit], kind)
        id_s = scores_of(pred, id_imgs)
        entry = {"n_id_test": len(id_imgs), "quantile": args.quantile, "thresholds": pred.ood.thresholds,
                 "default": pred.ood_method,
                 "false_alarm": {m: float((id_s[m] > pred.ood.thresholds[m]).mean()) for m in METHODS},
                 "auroc": {}, "flagged": {}, "dicom": dicom_verdicts(pred)}
        for set_name, imgs in ood_sets.items():
            s = scores_of(pred, imgs)
            entry["auroc"][set_name] = {m: auroc(id_s[m], s[m]) for m in METHODS}
            entry["flagged"][set_name] = {m: float((s[m] > pred.ood.thresholds[m]).mean()) for m in METHODS}
        results["models"][name] = entry
        print(f"\n== {name} model ({runs[name]}), in-distribution test n={len(id_imgs)}, thresholds at the "
              f"{args.quantile:g} quantile of validation ==")
        print(f"{'set':<34}" + "".join(f"{m:>22}" for m in METHODS))
        print(f"{'false alarms on ID test':<34}" + "".join(f"{entry['false_alarm'][m]:>22.3f}" for m in METHODS))
        for set_name in ood_sets:
            cells = "".join(f"{entry['auroc'][set_name][m]:>10.3f} ({entry['flagged'][set_name][m]:.2f} fl)"
                            for m in METHODS)
            print(f"{set_name:<34}{cells}")
        print("shared DICOM files:")
        for r in entry["dicom"]:
            print(f"  {r['file']:<44} {r['modality']:<4} {r['verdict']:<10} {r.get('why', '')}")
    results["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    write_result(out, results, SCRIPT)
    print(f"\nwrote {out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
