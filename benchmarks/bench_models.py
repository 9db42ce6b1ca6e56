"""Forward / backward time per batch for every medtl backbone, 2D and 3D.

2D: 224 x 224, batch 8, 3 channels. 3D: 64^3, batch 2, 1 channel, I3D-inflated.
Timed in train mode (forward + backward of a sum loss) and in inference mode
(eval, no grad). Prints a table and writes JSON (``--out``).

    python benchmarks/bench_models.py --repeats 3 --device cpu
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from medtl import models

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)

SETTINGS = {"2d": {"spatial_dims": 2, "in_channels": 3, "shape": (8, 3, 224, 224)},
            "3d": {"spatial_dims": 3, "in_channels": 1, "shape": (2, 1, 64, 64, 64)}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bench(arch: str, setting: str, device: torch.device, repeats: int, warmup: int) -> dict:
    cfg = SETTINGS[setting]
    model = models.create(arch, spatial_dims=cfg["spatial_dims"], in_channels=cfg["in_channels"],
                          num_classes=2).to(device)
    x = torch.rand(cfg["shape"], device=device)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    def infer() -> None:
        with torch.inference_mode():
            model(x)

    model.train()
    t_train = _time(train_step, device, repeats, warmup)
    model.eval()
    t_infer = _time(infer, device, repeats, warmup)
    row = {"arch": arch, "setting": setting, "input": list(cfg["shape"]), "device": str(device),
           "fwd_bwd_s": round(t_train, 4), "fwd_s": round(t_infer, 4),
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
    if device.type == "cuda":
        row["max_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        torch.cuda.reset_peak_memory_stats(device)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--archs", nargs="*", default=models.list_models())
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="benchmarks/out/bench_models.json")
    args = ap.parse_args(argv)
    refuse_foreign(args.out, SCRIPT)
    dev = args.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    print(f"{'arch':20s} {'setting':7s} {'fwd+bwd s':>10s} {'fwd s':>8s} {'params M':>9s}")
    for setting in args.settings:
        for arch in args.archs:
            row = bench(arch, setting, device, args.repeats, args.warmup)
            rows.append(row)
            print(f"{arch:20s} {setting:7s} {row['fwd_bwd_s']:10.3f} {row['fwd_s']:8.3f} {row['params_m']:9.2f}",
                  flush=True)
    meta = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "repeats": args.repeats,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    out = Path(args.out)
    write_result(out, {"meta": meta, "results": rows}, SCRIPT)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
