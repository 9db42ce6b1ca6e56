"""How often medtl's 95% intervals hold the true value, on simulated test sets of known AUC.

``medtl evaluate`` and the model card give a binary AUC Newcombe's score interval
(:func:`medtl.train.metrics.auc_interval`), counted figures such as sensitivity exact (Clopper-Pearson)
intervals (:func:`medtl.train.metrics.exact_intervals`), and the rest percentile intervals of a stratified
bootstrap (:func:`medtl.train.metrics.bootstrap_ci`). Percentile intervals are known to be too narrow on
small samples and near the edge of the range; this script measures by how much, against what medtl
reports (the bootstrap's AUC and sensitivity intervals are what medtl reported before), so the docs can say
when to trust them. Scores are binormal: negatives N(0, 1), positives N(d, s) (``--sd-pos``), probability
sigmoid(score), so the true AUC is Phi(d / sqrt(1 + s^2)), the true sensitivity at threshold 0.5 is
Phi(d / s) and the true specificity is 0.5. Sizes are cases per class (``15``) or ``POS:NEG`` (``20:180``).

    python benchmarks/bootstrap_coverage.py --out benchmarks/results/bootstrap_coverage.json
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, refuse_foreign, script_key, write_result  # noqa: E402

from sklearn.metrics import confusion_matrix  # noqa: E402

from medtl.train.metrics import auc_interval, bootstrap_ci, exact_intervals, roc_auc  # noqa: E402

SCRIPT = script_key(__file__)


def coverage(true_auc: float, n_pos: int, n_neg: int, sims: int, resamples: int, seed: int,
             sd_pos: float = 1.0) -> dict:
    """Fraction of ``sims`` simulated test sets whose 95% interval holds each true value: the intervals medtl
    reports (``coverage``), and the percentile bootstrap's for every figure (``bootstrap_only``)."""
    d = math.sqrt(1 + sd_pos ** 2) * norm.ppf(true_auc)
    truth = {"auc": true_auc, "sensitivity": float(norm.cdf(d / sd_pos)), "specificity": 0.5}
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
    kinds = ("coverage", "bootstrap_only")
    held = {kind: dict.fromkeys(truth, 0) for kind in kinds}
    below = {kind: dict.fromkeys(truth, 0) for kind in kinds}  # the true value under the interval
    width = {kind: dict.fromkeys(truth, 0.0) for kind in kinds}
    for sim in range(sims):
        score = np.r_[rng.normal(0, 1, n_neg), rng.normal(d, sd_pos, n_pos)]
        prob = 1 / (1 + np.exp(-score))
        boot = bootstrap_ci(y, prob, n=resamples, seed=sim, threshold=0.5)
        exact = exact_intervals(confusion_matrix(y, (prob >= 0.5).astype(int), labels=[0, 1]))
        exact["auc"] = auc_interval(roc_auc(y, prob), n_pos, n_neg)
        for kind, ci in (("coverage", {**boot, **exact}), ("bootstrap_only", boot)):
            for k, t in truth.items():
                lo, hi = ci[k]
                held[kind][k] += lo <= t <= hi
                below[kind][k] += t < lo
                width[kind][k] += (hi - lo) / sims
    out = {"true_auc": true_auc, "n_pos": n_pos, "n_neg": n_neg, "sd_pos": sd_pos, "truth": truth}
    for kind in kinds:
        out[kind] = {"held": {k: held[kind][k] / sims for k in truth},
                     "true_value_below_interval": {k: below[kind][k] / sims for k in truth},
                     "mean_width": {k: round(width[kind][k], 4) for k in truth}}
    return out


def _size(text: str) -> tuple[int, int]:
    """``15`` -> (15, 15); ``20:180`` -> (20, 180)."""
    pos, _, neg = text.partition(":")
    try:
        sizes = int(pos), int(neg or pos)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give cases per class (15) or positives:negatives (20:180)")
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each class needs at least one case")
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aucs", type=float, nargs="+", default=[0.76, 0.90, 0.96])
    ap.add_argument("--sizes", type=_size, nargs="+", default=[(15, 15), (50, 50), (150, 150), (20, 180)],
                    metavar="N|POS:NEG", help="cases per class, or positives:negatives")
    ap.add_argument("--sd-pos", type=float, nargs="+", default=[1.0, 2.0],
                    help="sd of the positives' scores (negatives': 1); 2 makes the ROC curve asymmetric")
    ap.add_argument("--sims", type=int, default=1000, help="simulated test sets per cell")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (eval.bootstrap's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON to write (benchmarks/results/...)")
    args = ap.parse_args(argv)
    if args.out is not None:
        refuse_foreign(args.out, SCRIPT)
    t0 = time.perf_counter()
    rows = []
    print("coverage of the 95% intervals (target 0.95), as medtl reports them / by percentile bootstrap")
    print(f"{'sd pos':>6} {'true AUC':>8} {'pos:neg':>8} {'AUC':>13} {'sensitivity':>13} {'specificity':>13}")
    for sd_pos in args.sd_pos:
        for auc in args.aucs:
            for n_pos, n_neg in args.sizes:
                row = coverage(auc, n_pos, n_neg, args.sims, args.resamples, args.seed, sd_pos)
                rows.append(row)
                c, b = row["coverage"]["held"], row["bootstrap_only"]["held"]
                print(f"{sd_pos:>6g} {auc:>8.2f} {f'{n_pos}:{n_neg}':>8} "
                      + " ".join(f"{c[k]:>6.3f}/{b[k]:.3f}" for k in ("auc", "sensitivity", "specificity")),
                      flush=True)
    result = {"script": SCRIPT, "command": shlex.join(["python", SCRIPT, *(argv if argv is not None else sys.argv[1:])]),
              "method": "rows[].coverage.held: as evaluate_predictions reports (AUC: Newcombe 2006 method 5; "
                        "sensitivity, specificity: exact Clopper-Pearson); rows[].bootstrap_only: stratified "
                        "percentile bootstrap for every figure (what medtl reported before)",
              "sims": args.sims, "resamples": args.resamples, "seed": args.seed, "rows": rows,
              "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}
    if args.out is not None:
        write_result(args.out, result, SCRIPT)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
