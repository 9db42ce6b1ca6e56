"""Viewer redraw time for a large 2D image: what each window/opacity slider step costs in the app.

    python benchmarks/bench_viewer.py [--size 4000] [--repeat 5] [--out viewer.json]

Renders a synthetic ``size`` x ``size`` 16-bit radiograph (a mammogram is about 4000 x 3000) with a
saliency map, as the app does on every slider step (``render_fast``) and for the labelled download
(``render`` then ``labelled``, matplotlib), and prints the median of ``repeat`` runs in ms.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.out:
        refuse_foreign(args.out, SCRIPT)

    from medtl.app import viewer as V
    from medtl.io import Scan

    rng = np.random.default_rng(0)
    n = args.size
    img = (rng.random((n, n), dtype=np.float32) * 4095).astype(np.uint16)
    scan = Scan(img.T[:, :, None], np.eye(4), format="image")
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    sal = Scan(np.exp(-((xx - 0.5) ** 2 + (yy - 0.4) ** 2) / 0.02).T[:, :, None], np.eye(4), format="image")
    window = (2048.0, 4096.0)
    shown = V.render_fast(scan, "axial", 0, window, sal)
    result = {
        "size": n, "displayed": list(shown.shape[:2]), "repeat": args.repeat,
        "slider_step_ms": _median_ms(lambda: V.render_fast(scan, "axial", 0, window, sal), args.repeat),
        "download_ms": _median_ms(lambda: V.labelled(V.render(scan, "axial", 0, window, sal), method="HiResCAM",
                                                     class_name="1", probability=0.9, model="m"), args.repeat),
        "machine": f"{platform.machine()} {__import__('os').cpu_count()} CPU(s)",
    }
    print(f"{n} x {n} image shown at {shown.shape[0]} x {shown.shape[1]}: slider step {result['slider_step_ms']:.0f} ms, "
          f"labelled download {result['download_ms']:.0f} ms (median of {args.repeat})")
    if args.out:
        write_result(args.out, result, SCRIPT)


if __name__ == "__main__":
    main()
