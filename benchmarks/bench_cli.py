"""Wall time of ``medtl --help``, ``--version``, ``configs`` and ``weights list`` as a user meets it (a new
process each time).

    python benchmarks/bench_cli.py [--repeat 10] [--out benchmarks/out/cli.json]

Prints min / median / max per command and writes JSON. The target (issue 15) is under 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)


def time_command(argv: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/out/cli.json")
    args = ap.parse_args()
    refuse_foreign(args.out, SCRIPT)
    exe = shutil.which("medtl")
    base = [exe] if exe else [sys.executable, "-m", "medtl.cli"]
    results = {}
    commands = {"--help": ["--help"], "--version": ["--version"], "train --help": ["train", "--help"],
                "configs": ["configs"], "configs NAME": ["configs", "medmnist2d"], "weights list": ["weights", "list"]}
    for name, extra in commands.items():
        t = time_command([*base, *extra], args.repeat)
        results[name] = {"min_s": min(t), "median_s": statistics.median(t), "max_s": max(t), "n": len(t)}
        print(f"medtl {name:<13} min {min(t):.3f} s  median {statistics.median(t):.3f} s  max {max(t):.3f} s  "
              f"(n={len(t)})")
    out = Path(args.out)
    write_result(out, {"command": " ".join(base), "results": results}, SCRIPT)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
