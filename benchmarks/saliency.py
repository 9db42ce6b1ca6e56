"""Which saliency method points at the lesion on the models users train? (issue #16)

Trains (or loads with ``--run2d``/``--run3d``) the demo recipe's 2D model
(EfficientNet-Lite0, ImageNet weights, 64 px, site A of the full synthetic cohort)
and a 3D variant of it on the cohort's ``ct3d`` volumes, then, on the product path
(the run's own preprocessing, ``medtl.explain.prepare`` -> ``explain`` ->
``map_to_scan``, i.e. what ``Predictor.predict(path, saliency=...)`` does), for every
positive study with a lesion mask:

- pointing game: the map's maximum (scan grid) lies in the mask dilated by 2 px;
- mass: share of the map's total inside the lesion, against the lesion's area
  share (what a flat map would get);
- deletion: mean p(lesion), relative to the intact input, after replacing the
  1, 2, 5, 10 and 20 % most salient network-input pixels by a blurred copy (lower:
  the map found what the model uses);
- lesion ablation: p(lesion) of the same synthetic patient rendered without its
  nodule (``medtl.demo.cohort.write_without_lesion``).

The winner is chosen on the *validation* positives (2D val, site A; 3D val):
highest mean pointing game, then mass ratio, then deletion; test figures are reported.

    python benchmarks/saliency.py                      # full run (~25 min on 2 CPU cores)
    python benchmarks/saliency.py --quick              # a few cases, fewer candidates
    python benchmarks/saliency.py --run2d R2 --run3d R3 --cohort DIR   # reuse trained runs
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)
RESULTS = ROOT / "benchmarks" / "results" / "saliency.json"
#: The 3D recipe (``medtl/configs/demo_ct3d.yaml``): the demo recipe on the cohort's ct3d volumes (24 training
#: volumes), site A's native grid, I3D inflation, BatchNorm statistics re-estimated on the volumes before
#: fine-tuning, BatchNorm momentum 0.1 (MONAI's EfficientNet uses TF's 0.01, whose eval-mode statistics lag the
#: weights over a short run), 30 epochs, best checkpoint by validation loss. These overrides of ``demo`` give
#: the same config (recorded in the report); the earlier 10-epoch, momentum-0.01 recipe barely used the nodule.
RECIPE_3D_NAME = "demo_ct3d"
RECIPE_3D = ["data.filter.kind=ct3d", "preprocess.spatial_dims=3", "preprocess.size=[32,64,64]",
             "model.inflate=i3d", "train.batchnorm=reestimate", "train.batch_size=4", "train.epochs=30",
             "train.lr=0.001", "train.bn_momentum=0.1", "train.monitor=loss", "name=demo_ct3d"]


@dataclass(frozen=True)
class Candidate:
    """A method with its settings, as ``medtl.explain.explain`` takes them."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    quick: bool = True


def candidates(dims: int) -> list[Candidate]:
    """Every candidate for a 2D or 3D model (``quick=False``: left out of ``--quick``)."""
    # Same labels in 2D and 3D (so one winner can be picked); settings in network-input voxels.
    # 3D occlusion at the default (125 copies of the volume) or a smaller patch costs minutes per
    # volume on 2 CPU cores, so 3D gets the large patch only (27 copies).
    if dims == 2:  # 64 x 64
        occ = [Candidate("occlusion (default: 8 px, stride 4)", "occlusion"),
               Candidate("occlusion, 16 px, stride 8", "occlusion", {"mask_size": 16, "overlap": 0.5})]
    else:  # 32 x 64 x 64
        occ = [Candidate("occlusion, 16 px, stride 8", "occlusion", {"mask_size": [16, 32, 32], "overlap": 0.5})]
    return [
        Candidate("Grad-CAM, last stage (s32)", "gradcam"),
        Candidate("Grad-CAM, stride 16", "gradcam", {"stride": 16}),
        Candidate("Grad-CAM, stride 8", "gradcam", {"stride": 8}),
        Candidate("Grad-CAM, strides 8+16", "gradcam", {"stride": [8, 16]}, False),
        Candidate("HiResCAM, stride 16", "hirescam", {"stride": 16}, False),
        Candidate("HiResCAM, stride 8", "hirescam", {"stride": 8}),
        Candidate("HiResCAM, strides 8+16", "hirescam", {"stride": [8, 16]}, False),
        Candidate("HiResCAM, stride 4", "hirescam", {"stride": 4}, False),
        Candidate("HiResCAM, strides 4+8", "hirescam", {"stride": [4, 8]}, False),
        Candidate("Grad-CAM, stride 4", "gradcam", {"stride": 4}, False),
        Candidate("Grad-CAM, strides 4+8", "gradcam", {"stride": [4, 8]}, False),
        Candidate("LayerCAM, stride 8", "layercam", {"stride": 8}),
        Candidate("LayerCAM, strides 8+16", "layercam", {"stride": [8, 16]}),
        Candidate("LayerCAM, strides 8+16+32", "layercam", {"stride": [8, 16, 32]}, False),
        Candidate("Grad-CAM++, last stage (s32)", "gradcam++"),
        Candidate("Grad-CAM++, stride 8", "gradcam++", {"stride": 8}, False),
        *occ,
        Candidate("Integrated Gradients", "integrated_gradients"),
        Candidate("SmoothGrad", "smoothgrad"),
    ]


def _say(msg: str) -> None:
    print(f"[saliency] {msg}", flush=True)


def _train(manifest: Path, out: Path, recipe: str, overrides: list[str] = ()) -> tuple[Path, float | None]:
    """The run folder, and the seconds its training took here (None: an earlier run reused)."""
    from medtl.config import load_config
    from medtl.train.run import train

    if (out / "model_card.json").is_file():
        return out, None
    cfg = load_config(recipe, [f"data.path={manifest}", *overrides])
    t0 = time.perf_counter()
    res = train(cfg, out, progress=False)
    seconds = time.perf_counter() - t0
    _say(f"trained {cfg.name} in {seconds:.0f} s: test AUC {res.metrics['test']['auc']:.3f}")
    return out, seconds


def run_facts(run: Path) -> dict[str, Any]:
    """What the docs say of the model explained, from its card: test AUC and count, best epoch, threads."""
    card = json.loads((run / "model_card.json").read_text(encoding="utf-8"))
    test, training = card["metrics"].get("test", {}), card.get("training", {})
    return {"test_auc": test.get("auc"), "test_n": test.get("n"), "best_epoch": training.get("best_epoch"),
            "epochs_run": training.get("epochs_run"), "threads": training.get("threads")}


def _mask_on(scan_shape: tuple[int, ...], path: Path) -> np.ndarray:
    """The lesion mask as a boolean array on the scan's voxel grid (the cohort writes it on that grid)."""
    from medtl.io import load_scan

    mask = np.asarray(load_scan(path).array) > 0
    if mask.shape != tuple(scan_shape):
        raise ValueError(f"{path}: mask grid {mask.shape} is not the scan's {scan_shape}")
    return mask


def _cases(manifest: Path, kinds: tuple[str, ...], split: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(manifest.open(newline="")))
    return [r for r in rows if r["kind"] in kinds and r["split"] == split and r["label"] == "1" and r["mask"]]


def _probability(predictor: Any, path: Path) -> float:
    pred = predictor.predict(str(path))
    return float(pred.probabilities[predictor.positive_class])


def evaluate(run: Path, manifest: Path, kinds: tuple[str, ...], cands: list[Candidate], limit: int | None,
             ablation_dir: Path) -> dict[str, Any]:
    """Per split/site and candidate: pointing, mass, area share, deletion; plus the lesion ablation."""
    from medtl.demo.cohort import write_without_lesion
    from medtl.explain import deletion_score, explain, map_to_scan, mass_inside, pointing_hit, prepare
    from medtl.infer import Predictor
    predictor = Predictor.from_run(run, device="cpu")
    model, prep = predictor.model, predictor.preprocessing
    target = predictor.class_names.index(predictor.positive_class)
    root = manifest.parent
    out: dict[str, Any] = {"run": str(run), "kinds": list(kinds), "groups": {}}
    for split in ("val", "test"):
        rows = _cases(manifest, kinds, split)
        for site in sorted({r["site"] for r in rows}):
            group = [r for r in rows if r["site"] == site][:limit]
            per: dict[str, dict[str, list[float]]] = {c.label: {"hit": [], "mass": [], "deletion": [], "seconds": []}
                                                      for c in cands}
            shares = []
            for r in group:
                scan, x, grid = prepare(prep, root / r["path"])
                mask = _mask_on(scan.shape, root / r["mask"])
                shares.append(float(mask.mean()))
                t_case = time.perf_counter()
                for c in cands:
                    t0 = time.perf_counter()
                    res = explain(model, x, c.method, target, **c.options)
                    on_scan = map_to_scan(res.map, grid, scan)
                    per[c.label]["seconds"].append(time.perf_counter() - t0)
                    per[c.label]["hit"].append(float(pointing_hit(on_scan, mask)))
                    per[c.label]["mass"].append(mass_inside(on_scan, mask))
                    per[c.label]["deletion"].append(deletion_score(model, x, res.map, target))
                _say(f"  {r['path']}: {time.perf_counter() - t_case:.0f} s")
            key = f"{split}/{site}"
            share = float(np.mean(shares))
            out["groups"][key] = {"n": len(group), "area_share": share, "methods": {
                label: {"pointing": float(np.mean(v["hit"])), "hits": int(np.sum(v["hit"])),
                        "mass": float(np.mean(v["mass"])), "mass_ratio": float(np.mean(v["mass"]) / share),
                        "deletion": float(np.mean(v["deletion"])), "seconds": float(np.mean(v["seconds"]))}
                for label, v in per.items()}}
            _say(f"{run.name} {key}: {len(group)} positives")
    # Lesion ablation on the test positives.
    tests = _cases(manifest, kinds, "test")[: None if limit is None else 2 * limit]
    blank = write_without_lesion(ablation_dir, [r["patient_id"] for r in tests], size="full")
    drops = []
    for r in tests:
        p_with = _probability(predictor, root / r["path"])
        p_without = _probability(predictor, blank.parent / r["path"])
        drops.append({"path": r["path"], "site": r["site"], "p_with": p_with, "p_without": p_without})
    out["ablation"] = {"n": len(drops), "dropped": int(sum(d["p_without"] < d["p_with"] for d in drops)),
                       "mean_p_with": float(np.mean([d["p_with"] for d in drops])),
                       "mean_p_without": float(np.mean([d["p_without"] for d in drops])), "cases": drops}
    return out


def pick_winner(results: dict[str, Any], cands: list[Candidate]) -> Candidate:
    """Best mean validation pointing game over the models, then mass ratio, then (lower) deletion."""
    def score(c: Candidate) -> tuple[float, float, float]:
        vals = [g["methods"][c.label] for m in results.values() for k, g in m["groups"].items()
                if k.startswith("val/")]
        return (float(np.mean([v["pointing"] for v in vals])), float(np.mean([v["mass_ratio"] for v in vals])),
                -float(np.mean([v["deletion"] for v in vals])))
    return max(cands, key=score)


def table(results: dict[str, Any], labels: list[str]) -> str:
    """Markdown table of the test figures per candidate ("-": not run on that model)."""
    cols = [(name, key) for name, m in results.items() for key in m["groups"] if key.startswith("test/")]

    def cell(name: str, key: str, label: str, fmt: str) -> str:
        v = results[name]["groups"][key]["methods"].get(label)
        if v is None:
            return "-"
        return f"{v['hits']}/{results[name]['groups'][key]['n']}" if fmt == "hits" else f"{v[fmt]:.2f}"

    def pooled(name: str, label: str, stat: str) -> str:
        gs = [g for k, g in results[name]["groups"].items() if k.startswith("test/") and label in g["methods"]]
        if not gs:
            return "-"
        return f"{np.average([g['methods'][label][stat] for g in gs], weights=[g['n'] for g in gs]):.2f}"

    names = [f"{n} {k[5:]}" for n, k in cols]
    head = ("| method | " + " | ".join(f"pointing {c}" for c in names) + " | " +
            " | ".join(f"mass ratio {c}" for c in names) + " | " + " | ".join(f"deletion {c}" for c in names) +
            " | s per map (" + " / ".join(results) + ") |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for label in labels:
        cells = [cell(n, k, label, "hits") for n, k in cols] + [cell(n, k, label, "mass_ratio") for n, k in cols] + \
                [cell(n, k, label, "deletion") for n, k in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " +
                     " / ".join(pooled(n, label, "seconds") for n in results) + " |")
    shares = ", ".join(f"{n} {k[5:]} {results[n]['groups'][k]['area_share']:.4f}" for n, k in cols)
    lines.append(f"\nLesion area share (a flat map's mass, ratio 1.0): {shares}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "medtl_saliency",
                        help="folder for the cohort, runs and ablated cases (not committed)")
    parser.add_argument("--cohort", type=Path, help="an existing full cohort folder (default: WORK/cohort)")
    parser.add_argument("--run2d", type=Path, help="a trained demo-recipe run (default: train one)")
    parser.add_argument("--run3d", type=Path, help="a trained 3D run (default: train one)")
    parser.add_argument("--no-3d", action="store_true", help="2D only")
    parser.add_argument("--no-2d", action="store_true", help="3D only")
    parser.add_argument("--quick", action="store_true", help="4 cases per group, fewer candidates")
    parser.add_argument("--only", help="candidate labels to run, separated by semicolons (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared 2-core machine)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    refuse_foreign(args.out, SCRIPT)
    torch.set_num_threads(args.threads)
    from medtl.demo.cohort import make_cohort
    from medtl.explain import CAM_STRIDES, DEFAULT_METHOD

    t0 = time.perf_counter()
    cohort = args.cohort or args.work / "cohort"
    manifest = cohort / "manifest.csv"
    if not manifest.is_file():
        _say(f"writing the full cohort to {cohort}")
        make_cohort(cohort, size="full")
    runs = {}
    if not args.no_2d:
        runs["2d"] = ((args.run2d, None) if args.run2d else _train(manifest, args.work / "run2d", "demo"), ("ct2d",))
    if not args.no_3d:
        runs["3d"] = ((args.run3d, None) if args.run3d else _train(manifest, args.work / "run3d", RECIPE_3D_NAME),
                      ("ct3d", "series"))
    results: dict[str, Any] = {}
    for name, ((run, train_seconds), kinds) in runs.items():
        dims = 2 if name == "2d" else 3
        cands = [c for c in candidates(dims) if (c.quick or not args.quick)
                 and (not args.only or c.label in args.only.split(";"))]
        results[name] = evaluate(Path(run), manifest, kinds, cands, 4 if args.quick else None,
                                 args.work / f"ablated_{name}")
        results[name]["run_card"] = {**run_facts(Path(run)), "train_seconds": train_seconds}
    ran = [{label for g in m["groups"].values() for label in g["methods"]} for m in results.values()]
    common = [c for c in candidates(2) if all(c.label in labels for labels in ran)]
    winner = pick_winner(results, common)
    labels = list(dict.fromkeys(label for m in results.values() for g in m["groups"].values()
                                for label in g["methods"]))
    text = table(results, labels)
    default_opts = {} if CAM_STRIDES.get(DEFAULT_METHOD) is None else {"stride": list(CAM_STRIDES[DEFAULT_METHOD])}
    agrees = winner.method == DEFAULT_METHOD and {k: list(v) if isinstance(v, (list, tuple)) else v
                                                   for k, v in winner.options.items()} == default_opts
    print(text)
    for name, m in results.items():
        a = m["ablation"]
        print(f"lesion ablation {name}: p(lesion) dropped for {a['dropped']}/{a['n']} test positives "
              f"(mean {a['mean_p_with']:.3f} -> {a['mean_p_without']:.3f})")
    print(f"winner on validation: {winner.label} ({winner.method} {winner.options}); medtl default: "
          f"{DEFAULT_METHOD} {default_opts} -> {'agrees' if agrees else 'DIFFERS: update medtl.explain'}")
    report = {
        "command": shlex.join(["python", Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "seconds": time.perf_counter() - t0, "torch_threads": args.threads,
        "platform": platform.platform(), "winner": {"label": winner.label, "method": winner.method,
                                                   "options": winner.options},
        "default": {"method": DEFAULT_METHOD, "options": default_opts, "agrees": agrees},
        "recipe_3d": RECIPE_3D, "results": results, "table": text,
    }
    write_result(args.out, report, SCRIPT, indent=1)
    _say(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
