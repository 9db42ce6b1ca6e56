"""Benchmark: batch scoring throughput (studies/s) for 2D and 3D inputs with 1 and 2 decoding workers.

Inputs come from medtl's synthetic cohort (``--size full``: CT DICOM slices of 100-128 px,
RLE / J2K / uncompressed; NIfTI volumes of 48x48x20 to 64x64x32). Models are untrained
ResNet-18s (2D: 64x64 input; 3D: 32^3) written as run directories, since weights do not
change the cost. For each setting a fresh ``scores.csv`` is written with ``medtl.infer.score``.

Reported per setting: studies/s (wall, discovery included), ``decode_fraction`` =
decode / (decode + infer) where decode is the time workers spent reading + preprocessing
(summed over workers) and infer the model time in the main process, and
``wait_fraction`` = wait / (wait + infer), wait being the time the main process blocked on
the decoding stream (near 0: inference-bound; near 1: decode-bound). With ``--ray`` a local
Ray is started once per worker count (``num_cpus`` = workers); its start-up time is reported
separately, not in the studies/s.

    python benchmarks/bench_score.py [--n2d 96] [--n3d 24] [--workers 1 2] [--batch-size 16]
                                     [--ray] [--out benchmarks/out/bench_score.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from medtl.infer import discover, score
from medtl.infer.engines import load_study
from medtl.infer.isolate import isolated_stream
from medtl.models import create
from medtl.demo.cohort import make_cohort
from medtl.runs import CARD_FORMAT, save_weights
from medtl._fileutil import write_json as _write_json
from medtl.transforms import Preprocessing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)


def make_run(out: Path, spatial_dims: int, size: int) -> Path:
    """An untrained run directory (weights + model card) that ``Predictor.from_run`` loads."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create("resnet18", weights=None, in_channels=1, spatial_dims=spatial_dims, num_classes=2)
    save_weights(model, out / "model.safetensors")
    prep = Preprocessing(spatial_dims=spatial_dims, size=[size] * spatial_dims, window="soft_tissue", channels=1)
    _write_json(out / "model_card.json", {
        "format": CARD_FORMAT, "name": f"bench{spatial_dims}d", "class_names": ["normal", "lesion"],
        "positive_class": "lesion", "threshold": 0.5, "model": model.card, "preprocessing": prep.to_dict(),
        "metrics": {}, "files": {"weights": "model.safetensors"}})
    return out


def inputs(cohort: Path, kind: str, n: int, dest: Path) -> Path:
    """The first ``n`` studies of ``kind`` from the cohort manifest, copied into ``dest``."""
    with open(cohort / "manifest.csv", newline="") as fh:
        paths = [r["path"] for r in csv.DictReader(fh) if r["kind"] == kind][:n]
    if len(paths) < n:
        raise SystemExit(f"the cohort has only {len(paths)} {kind} studies (asked {n})")
    dest.mkdir(parents=True)
    for rel in paths:
        shutil.copy(cohort / rel, dest / Path(rel).name)
    return dest


def run_one(run: Path, folder: Path, work: Path, workers: int, batch_size: int, engine: str) -> dict:
    out = work / f"{folder.name}_{engine}_w{workers}" / "scores.csv"
    t0 = time.perf_counter()
    s = score(run, folder, out, workers=workers, batch_size=batch_size, engine=engine, progress=False, device="cpu")
    wall = time.perf_counter() - t0
    busy = s.decode_seconds + s.infer_seconds
    return {
        "engine": engine, "workers": workers, "batch_size": batch_size, "studies": s.scored, "failed": s.failed,
        "wall_s": round(wall, 3), "studies_per_s": round(s.scored / wall, 2),
        "decode_s_total": round(s.decode_seconds, 3), "infer_s": round(s.infer_seconds, 3),
        "decode_fraction": round(s.decode_seconds / busy, 3) if busy else None,
        "decode_ms_per_study": round(1000 * s.decode_seconds / max(s.scored, 1), 2),
        "infer_ms_per_study": round(1000 * s.infer_seconds / max(s.scored, 1), 2),
        "wait_s": round(s.wait_seconds, 3),
        "wait_fraction": round(s.wait_seconds / (s.wait_seconds + s.infer_seconds), 3) if busy else None,
    }


def worker_startup(run: Path, folder: Path) -> float:
    """Seconds until a first study comes back from a fresh process's first worker (fork server start included)."""
    prep = json.loads((run / "model_card.json").read_text())["preprocessing"]
    study = discover(folder, 2).studies[0]
    t0 = time.perf_counter()  # the first worker starts the fork server
    item = next(iter(isolated_stream([study], load_study, (prep, False), 1, None, 1)))
    if item["error"]:
        raise SystemExit(f"worker start-up: {item['error']}")
    return time.perf_counter() - t0


def cli_seconds(run: Path, folder: Path, work: Path, workers: int, batch_size: int, repeat: int) -> list[float]:
    """Wall seconds of ``medtl score`` in a new process, each run into a fresh output."""
    times = []
    for i in range(repeat):
        out = work / f"cli_w{workers}_{i}" / "scores.csv"
        cmd = [sys.executable, "-m", "medtl.cli", "score", "--model", str(run), str(folder), "--out", str(out),
               "--workers", str(workers), "--batch-size", str(batch_size), "--no-progress", "--device", "cpu"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n2d", type=int, default=96, help="2D studies (CT DICOM slices)")
    ap.add_argument("--n3d", type=int, default=24, help="3D studies (NIfTI volumes)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cli-repeat", type=int, default=3, help="runs of `medtl score` per worker count (0: none)")
    ap.add_argument("--ray", action="store_true", help="also time --engine ray (needs ray)")
    ap.add_argument("--dir", help="working folder (default: a temporary one, removed at the end)")
    ap.add_argument("--out", default="benchmarks/out/bench_score.json")
    args = ap.parse_args()
    refuse_foreign(args.out, SCRIPT)

    tmp = tempfile.TemporaryDirectory(prefix="bench_score_") if not args.dir else None
    work = Path(args.dir or tmp.name)  # type: ignore[union-attr]
    try:
        cohort = work / "cohort"
        make_cohort(cohort, size="full", seed=0)
        cases = {
            "2d": (make_run(work / "run2d", 2, 64), inputs(cohort, "ct2d", args.n2d, work / "in2d")),
            "3d": (make_run(work / "run3d", 3, 32), inputs(cohort, "ct3d", args.n3d, work / "in3d")),
        }
        results = []

        def report_one(dims: str, r: dict) -> None:
            results.append({"input": dims, **r})
            print(f"{dims} {r['engine']:<5} workers={r['workers']}: {r['studies_per_s']:7.2f} studies/s "
                  f"({r['studies']} in {r['wall_s']:.2f} s)  decode {r['decode_ms_per_study']:.1f} ms/study, "
                  f"infer {r['infer_ms_per_study']:.1f} ms/study, decode fraction {r['decode_fraction']}, "
                  f"main waiting {r['wait_fraction']:.0%}", flush=True)

        startup = round(worker_startup(*cases["2d"]), 2)
        print(f"local workers' start-up: {startup:.2f} s once per process (not in the figures below)", flush=True)
        for dims, (run, folder) in cases.items():
            for w in args.workers:
                report_one(dims, run_one(run, folder, work, w, args.batch_size, "local"))
        cli = []
        for w in sorted({0, *args.workers}) if args.cli_repeat > 0 else []:
            times = cli_seconds(*cases["2d"], work, w, args.batch_size, args.cli_repeat)
            cli.append({"input": "2d", "workers": w, "wall_s": [round(t, 2) for t in times],
                        "median_s": round(statistics.median(times), 2)})
            print(f"medtl score, 2d, {args.n2d} studies, workers={w}: median {cli[-1]['median_s']:.2f} s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)})", flush=True)
        ray_init = {}
        if args.ray:
            import ray

            for w in args.workers:  # one local Ray per worker count (its CPUs bound the tasks in flight)
                t0 = time.perf_counter()
                ray.init(num_cpus=w, include_dashboard=False, log_to_driver=False)
                ray_init[w] = round(time.perf_counter() - t0, 2)
                print(f"ray.init(num_cpus={w}): {ray_init[w]:.1f} s (not in the figures below)", flush=True)
                try:
                    for dims, (run, folder) in cases.items():
                        report_one(dims, run_one(run, folder, work, w, args.batch_size, "ray"))
                finally:
                    ray.shutdown()
        report = {
            "benchmark": "bench_score", "results": results, "ray_init_s": ray_init,
            "local_worker_startup_s": startup, "cli": cli,
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "platform": platform.platform()},
            "settings": vars(args),
        }
        out = Path(args.out)
        write_result(out, report, SCRIPT)
        print(f"wrote {out}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
