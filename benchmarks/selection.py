"""How a run chooses its epoch, judged on validation images the choice did not see.

A run keeps the epoch with the best validation AUC; judging that choice (or a probe) by the same AUC
favours whatever picked it, most of all on a saturated validation split. Here each rule picks an epoch
on one stratified half of the validation images and is scored on the other half, both ways round, over
50 random halvings: the cross-fitted validation AUC (rule: results/medmnist_rule_selection.md).

    python benchmarks/medmnist.py run pneumoniamnist imagenet 0 --train-size 500 --tag epochs   # each run
    python benchmarks/selection.py            # every finished `epochs` run; JSON + verdict

Needs the runs' folders (``train.keep_epochs``: every epoch's weights). Writes
``benchmarks/results/medmnist_selection.json``; test figures are reported, never used to choose.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import medmnist as mm  # noqa: E402  (the run folders, names and evaluation of benchmarks/medmnist.py)
from _common import refuse_foreign, script_key  # noqa: E402

RULES = ("auc", "loss", "last")  #: the recipe's choice, the lowest validation cross-entropy, no choice
SPLITS = 50  #: random halvings of the validation images (numpy default_rng(k), k = 0..49)
TAG = "epochs"
OUT = mm.RESULTS.parent / "medmnist_selection.json"
SCRIPT = script_key(__file__)
#: a kept epoch re-scored must repeat the validation AUC its metrics.csv row recorded, to this
RESCORE_TOL = 1e-6


def pick(rule: str, aucs: np.ndarray, losses: np.ndarray) -> int:
    """The epoch index ``rule`` picks: ``auc`` the first highest (training keeps an epoch only when it
    improves strictly), ``loss`` the first lowest, ``last`` the last."""
    if rule == "auc":
        return int(np.argmax(aucs))
    if rule == "loss":
        return int(np.argmin(losses))
    if rule == "last":
        return len(aucs) - 1
    raise ValueError(f"unknown rule {rule!r} (one of {', '.join(RULES)})")


def halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified random halving of ``range(len(labels))``: each class's images shuffled by
    ``default_rng(seed)`` (classes in order), the first ``n_c // 2`` of each to the first half."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        first.append(idx[: len(idx) // 2])
        second.append(idx[len(idx) // 2:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def scores(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch, the AUC and the cross-entropy of ``probs`` (epochs, images, classes) on ``labels``."""
    from medtl.train.metrics import roc_auc

    aucs = np.array([roc_auc(labels, p) for p in probs])
    losses = -np.log(np.clip(probs[:, np.arange(len(labels)), labels], 1e-300, None)).mean(axis=1)
    return aucs, losses


def cross_fitted(labels: np.ndarray, probs: np.ndarray, splits: int = SPLITS) -> dict[str, float]:
    """Each rule's cross-fitted validation AUC: over ``splits`` halvings, the AUC on one half of the epoch
    the rule picks on the other, both ways round, averaged (``2 * splits`` AUCs)."""
    out: dict[str, list[float]] = {r: [] for r in RULES}
    for k in range(splits):
        a, b = halves(labels, k)
        sa, sb = scores(labels[a], probs[:, a]), scores(labels[b], probs[:, b])
        for chooser, judge in ((sa, sb), (sb, sa)):
            for rule in RULES:
                out[rule].append(float(judge[0][pick(rule, *chooser)]))
    return {r: float(np.mean(v)) for r, v in out.items()}


def epoch_files(run_dir: Path) -> list[Path]:
    """The weights ``train.keep_epochs`` kept, in epoch order (``epoch_001.safetensors`` ...)."""
    files = sorted((run_dir / "checkpoints").glob("epoch_*.safetensors"))
    if not files:
        raise SystemExit(f"{run_dir}: no epoch weights (run it with train.keep_epochs=true, --tag {TAG})")
    return files


def epoch_val_probs(run_dir: Path, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probs (epochs, images, classes))``: every kept epoch on the validation split, plain (no
    test-time views), as training validated it; ``threads``: CPU threads (default: the run's)."""
    import torch
    from safetensors.torch import load_file

    from medtl.config import load_config
    from medtl.data import build_dataset, load_items
    from medtl.runs import load_run
    from medtl.train.engine import predict_loader
    from medtl.train.run import _loader

    cfg = load_config(run_dir / "config.yaml")
    torch.set_num_threads(threads or max(1, cfg.train.threads))
    model, _, prep = load_run(run_dir)
    ds = build_dataset(load_items(cfg.data, seed=cfg.train.seed).split("val"), prep.transforms(), cache="none")
    loader = _loader([ds[i] for i in range(len(ds))], cfg)  # transformed once, scored once per epoch
    probs, labels = [], None
    for f in epoch_files(run_dir):
        model.load_state_dict(load_file(f))
        p, labels, _ = predict_loader(model, loader, torch.device("cpu"))
        probs.append(p)
    return labels, np.stack(probs)


def evaluate_run(row: dict, threads: int | None = None) -> dict:
    """One ``epochs`` run: the re-scoring check, each rule's cross-fitted figure and its pick on the whole
    validation split with the figures the recipe would report for it (with the views)."""
    from medtl.train.logger import read_history

    run_dir = mm._run_dir(row)
    labels, probs = epoch_val_probs(run_dir, threads)
    aucs, losses = scores(labels, probs)
    recorded = np.array([r["val_auc"] for r in read_history(run_dir / "metrics.csv")], dtype=float)
    rescore_gap = float(np.max(np.abs(recorded - aucs))) if len(recorded) == len(aucs) else float("inf")
    files = epoch_files(run_dir)
    picks, figures = {}, {}
    for rule in RULES:
        e = pick(rule, aucs, losses)
        picks[rule] = e + 1
        if e + 1 == row["best_epoch"]:  # the run's own model: its JSON has the figures already
            figures[rule] = {k: row[k] for k in ("val_auc", "test_auc", "test_accuracy")}
        else:
            cfg, card, out = mm.split_probs(run_dir, files[e], threads)
            f = mm.split_figures(cfg, out, len(card["class_names"]))
            figures[rule] = {k: f[k] for k in ("val_auc", "test_auc", "test_accuracy")}
    return {"name": row["name"], "dataset": row["dataset"], "weights": row["weights"], "seed": row["seed"],
            "train_size": row["train_size"], "epochs": len(files), "best_epoch": row["best_epoch"],
            "rescore_gap": rescore_gap, "cross_fitted": cross_fitted(labels, probs), "picks": picks,
            "figures": figures}


def verdict(runs: list[dict], seeds: tuple[int, ...] = mm.SEEDS) -> dict:
    """Per dataset (ImageNet start), the mean cross-fitted figure of each rule over ``seeds``, and the rule
    kept: one other than ``auc`` higher than it on both datasets (if two are, the larger smaller gain);
    None until every seed ran on both datasets with a passing re-scoring check."""
    ok = [r for r in runs if r["weights"] == "imagenet" and r["seed"] in seeds and r["rescore_gap"] <= RESCORE_TOL]
    by_ds: dict[str, dict[str, float]] = {}
    for ds in mm.DATASETS:
        rows = [r for r in ok if r["dataset"] == ds]
        if sorted(r["seed"] for r in rows) != sorted(seeds):
            return {"means": by_ds, "kept": None, "complete": False}
        by_ds[ds] = {rule: float(np.mean([r["cross_fitted"][rule] for r in rows])) for rule in RULES}
    gains = {rule: min(m[rule] - m["auc"] for m in by_ds.values()) for rule in RULES if rule != "auc"}
    winners = {rule: g for rule, g in gains.items() if g > 0}
    return {"means": by_ds, "gains": gains, "kept": max(winners, key=winners.get) if winners else "auc",
            "complete": True}


def _write(path: Path, done: dict[str, dict]) -> dict:
    """The probe's JSON from the runs scored so far; returns its verdict."""
    runs = sorted(done.values(), key=lambda r: r["name"])
    v = verdict(runs)
    mm._write_row(path, {"script": SCRIPT, "rule": "benchmarks/results/medmnist_rule_selection.md", "splits": SPLITS,
                         "rescore_tol": RESCORE_TOL, "runs": runs, "verdict": v})
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--threads", type=int, help="CPU threads for scoring (default: each run's own)")
    args = ap.parse_args()
    refuse_foreign(args.out, SCRIPT)
    done = {r["name"]: r for r in json.loads(args.out.read_text())["runs"]} if args.out.exists() else {}
    for p in sorted(mm.RESULTS.glob(f"*_{TAG}.json")):
        row = json.loads(p.read_text())
        if row["name"] not in done:
            done[row["name"]] = evaluate_run(row, args.threads)
            r = done[row["name"]]
            print(json.dumps({k: r[k] for k in ("name", "rescore_gap", "cross_fitted", "picks")}), flush=True)
            _write(args.out, done)  # after each run: a long pass interrupted keeps what it scored
    v = _write(args.out, done)
    for ds, means in v["means"].items():
        print(ds, " ".join(f"{rule} {m:.4f}" for rule, m in means.items()))
    print("kept:", v["kept"] if v["complete"] else "no verdict yet (seeds missing)")


if __name__ == "__main__":
    main()
