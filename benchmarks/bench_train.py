"""Training throughput: end-to-end images/s vs the model-only ceiling.

End-to-end = medtl's training loader (cached preprocessing + augmentation, workers,
pinned memory) feeding the same train step ``fit`` uses. Model-only = the same model,
batch, precision and memory format on synthetic tensors already on the device. The
ratio says whether the data pipeline is the bottleneck (goal >= 0.9).

    python benchmarks/bench_train.py --config pneumoniamnist_effnet_lite0 \\
        --steps 20 [--device cuda] [--epoch 0] [--formats] [train.batch_size=128 ...]

``--formats`` times both memory layouts, the default (contiguous) and channels-last (``channels_last_3d``
for 3D), whatever ``train.channels_last`` says: the measurement behind :func:`medtl.runs.memory_format`.

The model trains as ``fit`` sets it up for one epoch of the recipe (``--epoch``, default the last: the
strategy's freezing, frozen stages' BatchNorm in eval mode, ``train.bn_momentum``), so a ``gradual`` or
``partial`` recipe is timed with only the stages it trains.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

from medtl.config import load_config
from medtl.train.engine import (
    DistInfo,
    _to_device,
    amp_dtype,
    make_train_loader,
    train_step,
)
from medtl.runs import channels_last, memory_format, resolve_device, to_memory_format
from medtl.train.run import build_model, prepare_data, with_min_steps
from medtl.train.strategy import Strategy, build_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)


FORMAT_NAMES = {torch.contiguous_format: "contiguous", torch.channels_last: "channels_last",
                torch.channels_last_3d: "channels_last_3d"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(model, batches, criterion, opt, scaler, amp, device, steps: int, warmup: int) -> float:
    """Seconds for ``steps`` train steps after ``warmup`` untimed ones."""
    it = iter(batches)
    for _ in range(warmup):
        x, y = next(it)
        train_step(model, x, y, criterion, opt, scaler, amp)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        train_step(model, x, y, criterion, opt, scaler, amp)
    _sync(device)
    return time.perf_counter() - t0


def training_model(model: nn.Module, cfg, epoch: int | None = None) -> tuple[nn.Module, list[str], int]:
    """``model`` set up as ``fit`` trains it in ``epoch`` (0-based; None: the last) of ``cfg``'s recipe:
    BatchNorm momentum, the strategy's trainable stages (the others frozen, their BatchNorm in eval mode).
    Returns the model, the trainable stage names and the epoch."""
    tc = cfg.train
    epoch = tc.epochs - 1 if epoch is None else epoch
    if not 0 <= epoch < tc.epochs:
        raise SystemExit(f"--epoch {epoch}: the recipe has epochs 0 to {tc.epochs - 1}")
    if tc.bn_momentum is not None:
        from medtl.models.batchnorm import set_bn_momentum

        set_bn_momentum(model, tc.bn_momentum)
    trainable = Strategy(tc, pretrained=cfg.model.weights is not None).train_mode(model, epoch)
    return model, trainable, epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pneumoniamnist_effnet_lite0")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epoch", type=int, default=None, help="the recipe's epoch (0-based) to time; default: the last")
    ap.add_argument("--formats", action="store_true", help="time contiguous and channels-last layouts both")
    ap.add_argument("--out", default="benchmarks/out/bench_train.json")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    refuse_foreign(args.out, SCRIPT)

    cfg = load_config(args.config, [*args.overrides, f"train.device={args.device}"])
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:  # as training does
        torch.set_num_threads(cfg.train.threads)
    amp = amp_dtype(cfg.train, device)
    data = prepare_data(cfg, progress=True)
    # preprocess.channels: auto resolved from the data, epochs from train.min_steps, as training does
    cfg = with_min_steps(data.cfg, len(data.train_ds))
    model = build_model(cfg, data.cohort.n_classes, progress=False).to(device)
    chosen = memory_format(device, cfg.preprocess.spatial_dims) if cfg.train.channels_last else torch.contiguous_format
    last = channels_last(cfg.preprocess.spatial_dims)
    formats = [torch.contiguous_format, last] if args.formats else [chosen]
    step_model = torch.compile(model) if cfg.train.compile else model
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    opt = build_optimizer(model, cfg.train, cfg.model.weights is not None)  # all groups, as fit builds it
    model, trainable, epoch = training_model(model, cfg, args.epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    loader, _, _ = make_train_loader(data.train_ds, cfg, device, DistInfo())
    bs, n = cfg.train.batch_size, args.steps
    res = {
        "config": args.config, "overrides": args.overrides, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "amp": str(amp), "memory_format": FORMAT_NAMES[chosen],
        "compile": cfg.train.compile, "batch_size": bs, "loader_workers": loader.num_workers, "steps": n,
        "strategy": cfg.train.strategy, "epoch": epoch, "trainable_stages": trainable, "formats": {},
    }
    for fmt in formats:
        to_memory_format(model, fmt)

        def real_batches():
            while True:  # re-iterate (itertools.cycle would replay cached batches, skipping the pipeline)
                for batch in loader:
                    yield _to_device(batch, device, fmt)

        x0, y0 = next(real_batches())
        fake = (torch.empty_like(x0).normal_(), y0.clone())  # empty_like keeps x0's layout

        def synthetic_batches():
            while True:
                yield fake

        t_model = timed_steps(step_model, synthetic_batches(), criterion, opt, scaler, amp, device, n, args.warmup)
        t_e2e = timed_steps(step_model, real_batches(), criterion, opt, scaler, amp, device, n, args.warmup)
        r = {"model_only_images_per_s": n * bs / t_model, "end_to_end_images_per_s": n * bs / t_e2e}
        r["ratio"] = r["end_to_end_images_per_s"] / r["model_only_images_per_s"]
        res["formats"][FORMAT_NAMES[fmt]] = r
        res["input_shape"] = list(x0.shape[1:])
        print(f"{cfg.model.arch} {list(x0.shape[1:])} batch {bs} on {res['device_name']} (amp={res['amp']}, "
              f"workers={res['loader_workers']}, threads={res['threads']}, {FORMAT_NAMES[fmt]}); "
              f"{cfg.train.strategy} epoch {epoch + 1}/{cfg.train.epochs}: {len(trainable)} trainable stages")
        print(f"model-only ceiling : {r['model_only_images_per_s']:8.1f} images/s")
        print(f"end-to-end training: {r['end_to_end_images_per_s']:8.1f} images/s")
        print(f"ratio              : {r['ratio']:.3f}")
    res.update(res["formats"][FORMAT_NAMES[chosen]])  # chosen is always among the formats timed
    if args.formats:
        f = res["formats"]
        res["channels_last_speedup"] = {k: f[FORMAT_NAMES[last]][k] / f["contiguous"][k]
                                        for k in ("model_only_images_per_s", "end_to_end_images_per_s")}
        print(f"channels-last / contiguous: model-only x{res['channels_last_speedup']['model_only_images_per_s']:.2f}, "
              f"end-to-end x{res['channels_last_speedup']['end_to_end_images_per_s']:.2f}")
    res.update(warmup=args.warmup, command=shlex.join(["python", *sys.argv]))
    write_result(args.out, res, SCRIPT)


if __name__ == "__main__":
    main()
