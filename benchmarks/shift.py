"""Accuracy under a change of site: MedMNIST test sets with graded corruptions (MedMNIST-C style,
:mod:`medtl.transforms.corruptions`), for the ``medmnist2d`` recipe trained without domain-shift
augmentation and with the mild and strong presets, 3 seeds, PneumoniaMNIST and RetinaMNIST.

Corruption types are split in two: the *tuning* types are applied to the validation split and
are the only ones used to choose a preset; the *held-out* types are applied to the test split
and never looked at while choosing. The preset "chosen on validation" is the arm with the best
mean corrupted validation AUC (over the tuning types, all severities, mean of the seeds); the
acceptance compares it with no augmentation on the held-out types.

    python benchmarks/shift.py grid --jobs 2     # train the missing arms (benchmarks/medmnist.py run),
                                                 # then evaluate every run under every corruption
    python benchmarks/shift.py merge             # table + docs/benchmarks.md section "shift"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

from medtl._fileutil import atomic_path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import medmnist as mm  # noqa: E402  (the sibling benchmark: same runs, same recipe)

RESULTS = REPO / "benchmarks" / "results" / "shift"
#: preset -> medmnist.py tag; every arm at 64 px, the recipe's size when this was measured (strong: that recipe)
ARMS = {"none": "shift_none", "mild": "shift_mild", "strong": "px64"}
TUNING_TYPES = ("gaussian_noise", "gaussian_blur", "contrast_down", "gamma_up", "gamma_down")
MODALITY = {"pneumoniamnist": "xray", "retinamnist": "fundus"}
#: Training images per arm: PneumoniaMNIST at the small-cohort size of benchmarks/medmnist.py (500,
#: stratified; 4,708 would cost 3x the CPU time), RetinaMNIST whole (1,080).
TRAIN_SIZE = {"pneumoniamnist": 500, "retinamnist": None}


def held_out_types(dataset: str) -> tuple[str, ...]:
    from medtl.transforms.corruptions import MODALITY_CORRUPTIONS

    return tuple(c for c in MODALITY_CORRUPTIONS[MODALITY[dataset]] if c not in TUNING_TYPES)


def evaluate_run(run_dir: Path, dataset: str, out_json: Path, threads: int = 1,
                 splits: tuple[str, ...] = ("val", "test")) -> dict:
    """Clean and corrupted AUC of one run: tuning types on val, held-out types on test, 5 severities
    (``splits=("val",)``: only what a choice may look at)."""
    import torch

    from medtl.config import load_config
    from medtl.data import build_dataset, load_items
    from medtl.runs import load_run
    from medtl.train.engine import predict_loader
    from medtl.train.metrics import classification_metrics
    from medtl.transforms.corruptions import SEVERITIES, corrupt_uint8
    from monai.data import DataLoader

    torch.set_num_threads(threads)
    model, card, prep = load_run(run_dir, device="cpu")
    cfg = load_config(run_dir / "config.yaml")
    cohort = load_items(cfg.data, seed=cfg.train.seed)
    tf = prep.transforms()

    def auc(items: list[dict]) -> float:
        ds = build_dataset(items, tf, cache="none")
        probs, labels, _ = predict_loader(model, DataLoader(ds, batch_size=256, num_workers=0), torch.device("cpu"))
        return float(classification_metrics(labels, probs)["auc"])

    trained = json.loads((mm.RESULTS / f"{run_dir.name}.json").read_text())
    out: dict = {"run": run_dir.name, "dataset": dataset, "tag": trained["tag"], "seed": trained["seed"],
                 "clean": {}, "corrupted": {}}
    for split, types in (("val", TUNING_TYPES), ("test", held_out_types(dataset))):
        if split not in splits:
            continue
        items = cohort.split(split)
        out["clean"][split] = auc(items)
        out["corrupted"][split] = {}
        for name in types:
            out["corrupted"][split][name] = [
                auc([dict(it, image=corrupt_uint8(it["image"], name, s, seed=i)) for i, it in enumerate(items)])
                for s in SEVERITIES]
        print(f"{run_dir.name} {split}: clean {out['clean'][split]:.3f}, corrupted mean "
              f"{np.mean([v for vs in out['corrupted'][split].values() for v in vs]):.3f}", flush=True)
    with atomic_path(out_json) as part:  # makes the parent folder too
        part.write_text(json.dumps(out, indent=2))
    return out


def grid(jobs: int, threads: int, seeds=mm.SEEDS) -> None:
    """Train the missing arms, then evaluate the missing runs, ``jobs`` subprocesses at a time."""
    arms = [(ds, "imagenet", s, TRAIN_SIZE[ds], tag) for tag in ARMS.values() for s in seeds for ds in mm.DATASETS]
    mm.run_grid(arms, jobs, threads)
    todo = [mm.run_name(*a) for a in arms if not (RESULTS / f"{mm.run_name(*a)}.json").exists()
            and (mm.RESULTS / f"{mm.run_name(*a)}.json").exists()]
    mm.run_pool([(f"eval {name}", [sys.executable, __file__, "eval", name, "--threads", str(threads)])
                 for name in todo], jobs)


def _mean(xs):
    return float(np.mean(xs))


def summarise() -> dict:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    table: dict = {}
    for ds in mm.DATASETS:
        for preset, tag in ARMS.items():
            size = f"_n{TRAIN_SIZE[ds]}_" if TRAIN_SIZE[ds] else "_all_"
            rs = [r for r in rows if r["dataset"] == ds and r["tag"] == tag and size in r["run"]]
            if not rs:
                continue
            per_seed = {
                "clean_test": [r["clean"]["test"] for r in rs],
                "corrupted_test": [_mean([v for vs in r["corrupted"]["test"].values() for v in vs]) for r in rs],
                "worst_test": [_mean([vs[-1] for vs in r["corrupted"]["test"].values()]) for r in rs],
                "clean_val": [r["clean"]["val"] for r in rs],
                "corrupted_val": [_mean([v for vs in r["corrupted"]["val"].values() for v in vs]) for r in rs],
            }
            table[(ds, preset)] = {"seeds": len(rs), "runs": [r["run"] for r in rs],
                                   **{k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else float("nan"))
                                      for k, v in per_seed.items()},
                                   "per_type_test": {name: _mean([np.mean(r["corrupted"]["test"][name]) for r in rs])
                                                     for name in rs[0]["corrupted"]["test"]}}
    return table


def chosen_preset(table: dict, ds: str) -> str | None:
    """The arm with the best mean corrupted *validation* AUC (tuning types only)."""
    cands = [(v["corrupted_val"][0], p) for (d, p), v in table.items() if d == ds]
    return max(cands)[1] if cands else None


def markdown(table: dict) -> str:
    lines = ["## Accuracy under a change of site (`benchmarks/shift.py`)", "",
             "Recipe `medmnist2d` (ImageNet start) at 64 px (its size when this was measured; `benchmarks/medmnist.py` "
             "tag `px64`) with `augment.domain_shift` none / mild / strong; corruptions of "
             "`medtl.transforms.corruptions` at 5 severities applied to the 28 px images before preprocessing. "
             "PneumoniaMNIST arms train on 500 stratified images (the small-cohort setting), RetinaMNIST on all 1,080. "
             f"Tuning types (validation split, used to choose): {', '.join(TUNING_TYPES)}. Held-out types (test split, "
             "never used to choose): the rest of each modality's list. Mean ± sd over seeds. Commands: "
             "`python benchmarks/shift.py grid --jobs 2`, `python benchmarks/shift.py merge`; "
             f"{platform.machine()} {os.cpu_count()} CPU(s).", "",
             "| dataset | preset | seeds | val AUC corrupted (tuning types) | test AUC clean | test AUC held-out "
             "corruptions, mean | worst severity |", "|---|---|---|---|---|---|---|"]
    for (ds, preset), v in table.items():
        star = " (chosen)" if chosen_preset(table, ds) == preset else ""
        cell = lambda k: f"{v[k][0]:.3f} ± {v[k][1]:.3f}" if v[k][1] == v[k][1] else f"{v[k][0]:.3f}"  # noqa: E731
        lines.append(f"| {ds} | {preset}{star} | {v['seeds']} | {cell('corrupted_val')} | {cell('clean_test')} | "
                     f"{cell('corrupted_test')} | {cell('worst_test')} |")
    lines += ["", "Held-out corruptions, test AUC per type (mean over severities and seeds):", "",
              "| dataset | preset | " + " | ".join(held_out_types("pneumoniamnist")) + " |",
              "|---|---|" + "---|" * len(held_out_types("pneumoniamnist"))]
    for (ds, preset), v in table.items():
        lines.append(f"| {ds} | {preset} | " + " | ".join(
            f"{v['per_type_test'][n]:.3f}" if n in v["per_type_test"] else "–" for n in held_out_types("pneumoniamnist"))
            + " |")
    return "\n".join(lines) + "\n"


def comparison(table: dict, ds: str) -> str:
    """The chosen preset against no augmentation, in the issue's terms: the held-out corrupted gain in
    units of the larger seed sd, and the clean test AUC change (an empty string without both arms)."""
    c = chosen_preset(table, ds)
    if not c or (ds, "none") not in table or c == "none":
        return ""
    a, b = table[(ds, c)], table[(ds, "none")]
    gain = a["corrupted_test"][0] - b["corrupted_test"][0]
    sd = max(a["corrupted_test"][1], b["corrupted_test"][1])
    times = f"{gain / sd:.1f}× the larger seed sd {sd:.3f}" if sd > 0 else f"seed sd {sd}"
    clean = a["clean_test"][0] - b["clean_test"][0]
    return (f"\n{ds}: chosen on validation: **{c}** ({a['seeds']} vs {b['seeds']} seeds); held-out corrupted test AUC "
            f"{a['corrupted_test'][0]:.3f} vs {b['corrupted_test'][0]:.3f} without augmentation: gain {gain:+.3f}, "
            f"{times}; worst severity {a['worst_test'][0]:.3f} vs {b['worst_test'][0]:.3f}; clean test AUC "
            f"{a['clean_test'][0]:.3f} vs {b['clean_test'][0]:.3f} ({clean:+.3f}).\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="evaluate one run of benchmarks/out/medmnist_runs under every corruption")
    e.add_argument("run")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--val-only", action="store_true",
                   help="only the validation split (tuning types): what choosing a recipe may look at")
    g = sub.add_parser("grid", help="train and evaluate every missing arm")
    g.add_argument("--jobs", type=int, default=2)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--seeds", type=int, nargs="+", default=list(mm.SEEDS))
    m = sub.add_parser("merge")
    m.add_argument("--md", default=str(REPO / "docs" / "benchmarks.md"))
    args = ap.parse_args()
    if args.cmd == "eval":
        run_dir = mm.RUNS / args.run
        ds = next(d for d in mm.DATASETS if args.run.startswith(d))
        if args.val_only:
            evaluate_run(run_dir, ds, RESULTS / "val_only" / f"{args.run}.json", args.threads, ("val",))
        else:
            evaluate_run(run_dir, ds, RESULTS / f"{args.run}.json", args.threads)
    elif args.cmd == "grid":
        grid(args.jobs, args.threads, tuple(args.seeds))
    else:
        from transfer import write_section

        table = summarise()
        with atomic_path(REPO / "benchmarks" / "results" / "shift_summary.json") as part:
            part.write_text(json.dumps(
                [{"dataset": d, "preset": p, **v} for (d, p), v in table.items()], indent=2, default=list))
        text = markdown(table)
        for ds in mm.DATASETS:
            text += comparison(table, ds)
        write_section(Path(args.md), "shift", text)
        print(text)


if __name__ == "__main__":
    main()
