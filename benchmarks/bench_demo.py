"""Benchmark: ``medtl demo`` as a user runs it, its run time and its second-site table.

Runs ``python -m medtl.cli demo --out WORK`` in a new process (timed from start to exit), then reads
what the demo wrote: each arm's site-A test metrics from its model card and its site-B test metrics
from ``WORK/eval/ARM/metrics.json``. Prints the table of docs/benchmarks.md ("The demo's second site")
and writes JSON with the machine's CPU count and load average before and after the run (a timing on
a busy machine overstates an idle one).

    python benchmarks/bench_demo.py [--work DIR] [--out benchmarks/out/demo.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, work_folder, write_result  # noqa: E402

SCRIPT = script_key(__file__)
ARMS = {"baseline": "no domain-shift augmentation", "domain_shift": "`augment.domain_shift: strong`"}


def _site(metrics: dict[str, Any], predictions: Path) -> dict[str, Any]:
    """The figures the table and the prose quote, from one split's metrics and predictions: AUC with its
    bootstrap CI, calibration, the decisions at the card's threshold (``confusion_matrix``: rows true
    normal/lesion, columns called normal/lesion) and the lowest lesion probability given to any slice."""
    with open(predictions, newline="", encoding="utf-8") as f:
        p_lesion = [float(row["p_lesion"]) for row in csv.DictReader(f)]
    return {"n": metrics.get("n"), "auc": metrics.get("auc"), "auc_ci": metrics.get("ci", {}).get("auc"),
            "ece": metrics.get("ece"), "threshold": metrics.get("threshold"),
            "specificity": metrics.get("specificity"), "confusion_matrix": metrics.get("confusion_matrix"),
            "min_p_lesion": min(p_lesion)}


def read_demo(work: Path) -> dict[str, dict[str, Any]]:
    """Each arm's site-A (model card) and site-B (``eval/ARM/metrics.json``) test figures."""
    arms = {}
    for arm in ARMS:
        run, evaluation = work / "runs" / arm, work / "eval" / arm
        card = json.loads((run / "model_card.json").read_text(encoding="utf-8"))
        site_b = json.loads((evaluation / "metrics.json").read_text(encoding="utf-8"))
        a = _site(card["metrics"]["test"], run / "predictions_test.csv")
        b = _site(site_b, evaluation / "predictions_test.csv")
        arms[arm] = {"A": a, "B": b, "gap": round(a["auc"] - b["auc"], 6)}
    return arms


def _auc(site: dict[str, Any]) -> str:
    ci = site["auc_ci"]
    return f"{site['auc']:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci and ci[0] != ci[1] else "")


def table(arms: dict[str, dict[str, Any]]) -> str:
    """The docs' table: test AUC on each site (its 95 % CI as the card gives it, where it is not a point: Newcombe's
    since medtl gives a two-class AUC that one) and the gap (to four places: it is the difference of unrounded
    AUCs)."""
    lines = ["| arm | site A | site B | site-B gap |", "|---|---|---|---|"]
    for arm, title in ARMS.items():
        r = arms[arm]
        lines.append(f"| {title} | {_auc(r['A'])} | {_auc(r['B'])} | {r['gap']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="the demo's --out folder (default: a temporary one, removed after)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/demo.json"))
    args = ap.parse_args(argv)
    refuse_foreign(args.out, SCRIPT)

    work, cleanup = work_folder(args.work, "medtl-bench-demo-")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medtl.cli", "demo", "--out", str(work)], check=True)
    seconds = time.perf_counter() - t0
    load_after = os.getloadavg()
    arms = read_demo(work)
    cleanup()
    result = {
        "command": shlex.join(["python", "benchmarks/bench_demo.py", *(sys.argv[1:] if argv is None else argv)]),
        "demo_command": "medtl demo --out WORK",
        "seconds": round(seconds, 1),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after]},
        "arms": arms,
    }
    print(table(arms))
    print(f"medtl demo: {seconds:.0f} s on {os.cpu_count()} CPU(s), load average before "
          f"{load_before[0]:.2f}, after {load_after[0]:.2f}")
    write_result(args.out, result, SCRIPT)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
