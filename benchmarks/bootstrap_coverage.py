"""How often medtl's 95% intervals hold the true value, on simulated test sets of known AUC.

``medtl evaluate`` and the model card give percentile intervals of a stratified bootstrap
(:func:`medtl.train.metrics.bootstrap_ci`) for the AUC, and exact (Clopper-Pearson) intervals for
counted figures such as sensitivity (:func:`medtl.train.metrics.exact_intervals`). Percentile intervals
are known to be too narrow on small samples and near the edge of the range; this script measures by how
much, for both kinds (the bootstrap's sensitivity interval is what medtl reported before), so the docs
can say when to trust them. Scores are binormal: negatives N(0, 1), positives N(d, 1), probability
sigmoid(score), so the true AUC is Phi(d / sqrt 2), the true sensitivity at threshold 0.5 is Phi(d) and
the true specificity is 0.5.

    python benchmarks/bootstrap_coverage.py --out benchmarks/results/bootstrap_coverage.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, refuse_foreign, script_key, write_result  # noqa: E402

from sklearn.metrics import confusion_matrix  # noqa: E402

from medtl.train.metrics import bootstrap_ci, exact_intervals  # noqa: E402

SCRIPT = script_key(__file__)


def coverage(true_auc: float, n_per_class: int, sims: int, resamples: int, seed: int) -> dict:
    """Fraction of ``sims`` simulated test sets whose 95% interval holds each true value: the intervals medtl
    reports (``coverage``), and the percentile bootstrap's for every figure (``bootstrap_only``)."""
    d = math.sqrt(2) * norm.ppf(true_auc)
    truth = {"auc": true_auc, "sensitivity": float(norm.cdf(d)), "specificity": 0.5}
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_per_class, int), np.ones(n_per_class, int)]
    kinds = ("coverage", "bootstrap_only")
    held = {kind: dict.fromkeys(truth, 0) for kind in kinds}
    below = {kind: dict.fromkeys(truth, 0) for kind in kinds}  # the true value under the interval
    width = {kind: dict.fromkeys(truth, 0.0) for kind in kinds}
    for sim in range(sims):
        score = np.r_[rng.normal(0, 1, n_per_class), rng.normal(d, 1, n_per_class)]
        prob = 1 / (1 + np.exp(-score))
        boot = bootstrap_ci(y, prob, n=resamples, seed=sim, threshold=0.5)
        exact = exact_intervals(confusion_matrix(y, (prob >= 0.5).astype(int), labels=[0, 1]))
        for kind, ci in (("coverage", {**boot, **exact}), ("bootstrap_only", boot)):
            for k, t in truth.items():
                lo, hi = ci[k]
                held[kind][k] += lo <= t <= hi
                below[kind][k] += t < lo
                width[kind][k] += (hi - lo) / sims
    out = {"true_auc": true_auc, "n_per_class": n_per_class, "truth": truth}
    for kind in kinds:
        out[kind] = {"held": {k: held[kind][k] / sims for k in truth},
                     "true_value_below_interval": {k: below[kind][k] / sims for k in truth},
                     "mean_width": {k: round(width[kind][k], 4) for k in truth}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aucs", type=float, nargs="+", default=[0.76, 0.90, 0.96])
    ap.add_argument("--n-per-class", type=int, nargs="+", default=[15, 50, 150])
    ap.add_argument("--sims", type=int, default=1000, help="simulated test sets per cell")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (eval.bootstrap's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON to write (benchmarks/results/...)")
    args = ap.parse_args(argv)
    if args.out is not None:
        refuse_foreign(args.out, SCRIPT)
    t0 = time.perf_counter()
    rows = []
    print("coverage of the 95% intervals (target 0.95); sensitivity and specificity: as medtl reports them "
          "(exact) / by percentile bootstrap")
    print(f"{'true AUC':>8} {'n/class':>7} {'AUC':>6} {'sensitivity':>13} {'specificity':>13}")
    for auc in args.aucs:
        for n in args.n_per_class:
            row = coverage(auc, n, args.sims, args.resamples, args.seed)
            rows.append(row)
            c, b = row["coverage"]["held"], row["bootstrap_only"]["held"]
            print(f"{auc:>8.2f} {n:>7d} {c['auc']:>6.3f} {c['sensitivity']:>6.3f}/{b['sensitivity']:.3f} "
                  f"{c['specificity']:>6.3f}/{b['specificity']:.3f}", flush=True)
    result = {"script": SCRIPT, "command": "python " + " ".join([SCRIPT, *(argv if argv is not None else sys.argv[1:])]),
              "method": "rows[].coverage.held: as evaluate_predictions reports (AUC: stratified percentile bootstrap; "
                        "sensitivity, specificity: exact Clopper-Pearson); rows[].bootstrap_only: percentile "
                        "bootstrap for every figure (what medtl reported before)",
              "sims": args.sims, "resamples": args.resamples, "seed": args.seed, "rows": rows,
              "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}
    if args.out is not None:
        write_result(args.out, result, SCRIPT)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
