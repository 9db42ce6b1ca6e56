"""The ``medtl`` command line: one entry point, one subcommand per task.

Handlers import their heavy modules lazily so ``medtl --help`` stays fast. Any
:class:`~medtl.errors.MedtlError` is printed as one line (no traceback) and the
exit code is non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from medtl import __version__
from medtl.errors import MedtlError

Handler = Callable[[argparse.Namespace], int]


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --- info / convert / sample-data -------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    from medtl.io import detect_format, list_series, load_scan

    path = Path(args.path)
    scan = load_scan(path, series=args.series, progress=None if not args.json else False)
    info = scan.summary()
    if detect_format(path) in ("folder", "zip"):
        info["series_found"] = list_series(path)
    if args.json:
        _print_json(info)
        return 0
    for key, value in info.items():
        if key == "series_found":
            print(f"series found: {len(value)}")
            for s in value:
                mark = "*" if s.get("series_uid") == scan.metadata.get("series_uid") else " "
                print(f"  {mark}[{s.get('index')}] {s.get('modality', '?'):<4} {s.get('n_files', '?'):>5} files  "
                      f"{s.get('description') or ''}  {s.get('series_uid')}"
                      f"{'' if s.get('is_image', True) else '  (not an image)'}")
        elif key == "slice_report" and isinstance(value, dict):
            print("slice report: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        else:
            print(f"{key.replace('_', ' ')}: {value}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from medtl.io import load_scan, save_nifti

    scan = load_scan(args.input, series=args.series, grayscale=args.grayscale)
    out = save_nifti(scan, args.output)
    print(f"wrote {out} shape={list(scan.shape)} spacing={[round(s, 4) for s in scan.spacing]} "
          f"orientation={scan.orientation}")
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from medtl.sample_data import make_cohort

    manifest = make_cohort(args.out, size=args.size, seed=args.seed, progress=True)
    print(f"wrote sample cohort: {manifest}")
    return 0


# --- weights ---------------------------------------------------------------------------------

def cmd_weights(args: argparse.Namespace) -> int:
    from medtl.models import weights as W

    if args.weights_cmd == "list":
        rows = W.list_weights(weights_dir=args.weights_dir)
        for r in rows:
            local = Path(r["local"]) if r.get("local") else None
            r["size_mb"] = round(local.stat().st_size / 2**20, 1) if local else None
        if args.json:
            _print_json(rows)
            return 0
        print(f"{'name':<20} {'file':<34} {'size':>9}  available at")
        for r in rows:
            size = f"{r['size_mb']:.1f} MB" if r["size_mb"] else "-"
            print(f"{r['name']:<20} {r['filename']:<34} {size:>9}  {r['local'] or 'not here (medtl weights fetch/import)'}")
        return 0
    if args.weights_cmd == "fetch":
        print(W.fetch(args.name))
        return 0
    if args.weights_cmd == "import":
        print(f"imported into cache: {W.import_file(args.file, name=args.name)}")
        return 0
    if args.weights_cmd == "verify":
        rows = W.verify(args.name, weights_dir=args.weights_dir)
        bad = 0
        for r in rows:
            if r["path"] is None:
                print(f"--  {r['name']:<20} not available")
            elif r["ok"]:
                print(f"OK  {r['name']:<20} {r['path']}")
            else:
                bad += 1
                print(f"BAD {r['name']:<20} {r['path']}  expected sha256 {r['expected']}, actual {r['actual']}")
        return 1 if bad else 0
    raise MedtlError(f"unknown weights command {args.weights_cmd!r}")


# --- train / evaluate --------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from medtl.config import load_config
    from medtl.train.run import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, args.out, resume=args.resume)
    test = result.metrics.get("test", {})
    if test:
        ci = test.get("ci", {})
        auc_ci = ci.get("auc")
        span = f" (95% CI {auc_ci[0]:.3f}-{auc_ci[1]:.3f})" if auc_ci else ""
        print(f"test AUC {test.get('auc', float('nan')):.4f}{span}, accuracy {test.get('accuracy', float('nan')):.4f}")
    print(f"run written to {result.run_dir} (model card: {result.run_dir / 'model_card.json'})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from medtl.train.run import evaluate

    metrics = evaluate(args.model, data=args.data, split=args.split, out=args.out, overrides=args.overrides)
    if args.json:
        _print_json(metrics)
        return 0
    ci = metrics.get("ci", {})
    for key in ("n", "auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ece", "threshold"):
        if key in metrics:
            value = metrics[key]
            extra = f"  (95% CI {ci[key][0]:.3f}-{ci[key][1]:.3f})" if key in ci else ""
            print(f"{key:<18} {value:.4f}{extra}" if isinstance(value, float) else f"{key:<18} {value}")
    return 0


# --- app ---------------------------------------------------------------------------------------

def cmd_app(args: argparse.Namespace) -> int:
    # The app lives in the repository's apps/ folder, beside this package in a checkout (pip install -e).
    root = Path(__file__).resolve().parent.parent
    if not (root / "apps" / "medtl_app.py").is_file():
        raise MedtlError("`medtl app` needs the repository's apps/ folder, which this installation lacks; "
                         "install medtl from a checkout: pip install -e '.[app]'")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from apps.medtl_app import serve
    except ModuleNotFoundError as exc:
        if exc.name != "gradio":
            raise
        raise MedtlError("`medtl app` needs Gradio: pip install 'medtl[app]'") from None
    return serve(args.model, host=args.host, port=args.port, device=args.device)


def cmd_demo(args: argparse.Namespace) -> int:
    from medtl.demo import run_demo

    report = run_demo(args.out, size=args.size, epochs=args.epochs)
    print(f"open {report}")
    if args.serve:
        runs = Path(args.out) / "runs"
        models = [f"{name}={runs / name}" for name in ("domain_shift", "baseline")]
        return cmd_app(argparse.Namespace(model=models, host=args.host, port=args.port, device="auto"))
    return 0


# --- parser ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtl", description="medtl: transfer learning for medical imaging (load, adapt, fine-tune, explain, serve).")
    parser.add_argument("--version", action="version", version=f"medtl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="describe a scan: format, modality, shape, spacing, orientation, series")
    p.add_argument("path", help="DICOM file, DICOM folder or .zip, NIfTI, PNG/JPEG/TIFF")
    p.add_argument("--series", help="series index or SeriesInstanceUID (folders/zips)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="convert any supported scan to NIfTI with its geometry")
    p.add_argument("input")
    p.add_argument("output", help="OUT.nii or OUT.nii.gz")
    p.add_argument("--series", help="series index or SeriesInstanceUID (folders/zips)")
    p.add_argument("--grayscale", action="store_true", help="convert colour images to luminance")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("sample-data", help="write the synthetic sample cohort (DICOM, NIfTI, PNG + manifest)")
    p.add_argument("out", help="output folder")
    p.add_argument("--size", choices=["small", "full"], default="full")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("weights", help="list, fetch, import (air-gapped) and verify pretrained weights")
    p.add_argument("--weights-dir", help="folder of weight files (also MEDTL_WEIGHTS_DIR)")
    wsub = p.add_subparsers(dest="weights_cmd", metavar="ACTION", required=True)
    w = wsub.add_parser("list", help="name, file, size and whether it is available")
    w.add_argument("--json", action="store_true")
    w = wsub.add_parser("fetch", help="download into the cache (progress bar, SHA-256 check)")
    w.add_argument("name")
    w = wsub.add_parser("import", help="verify a file's SHA-256 and copy it into the cache (offline sites)")
    w.add_argument("file")
    w.add_argument("--name", help="registry name, when the file name does not tell")
    w = wsub.add_parser("verify", help="re-check the SHA-256 of available weight files")
    w.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("train", help="fine-tune a backbone on a cohort (YAML config + key=value overrides)")
    p.add_argument("--config", help="YAML experiment config (see configs/)")
    p.add_argument("--out", required=True, help="run directory (model, model card, metrics, plots)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.epochs=5 data.path=x.npz")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run on a dataset split (metrics with 95%% CIs)")
    p.add_argument("--model", required=True, help="run directory written by `medtl train`")
    p.add_argument("--data", help="dataset (manifest CSV, class folders, .npz); default: the training data")
    p.add_argument("--split", default="test", help="split to evaluate (train/val/test/all)")
    p.add_argument("--out", help="folder for metrics JSON and plots")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data.* overrides, e.g. data.filter.site=B")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="the whole pipeline on the built-in sample cohort (CPU, offline, minutes)")
    p.add_argument("--out", default="demo_out", help="output folder (report.html, runs, scores)")
    p.add_argument("--size", choices=["small", "full"], default="full", help="sample cohort size")
    p.add_argument("--epochs", type=int, help="override the training epochs")
    p.add_argument("--serve", action="store_true", help="then open the app on the trained model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=cmd_demo)

    from medtl.infer.cli import add_predict_parser, add_score_parser

    add_predict_parser(sub)
    add_score_parser(sub)

    p = sub.add_parser("app", help="serve the browser app for clinicians: upload a scan, see prediction and saliency")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]RUN_DIR",
                   help="run folder written by `medtl train`; repeat to offer several models")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.set_defaults(func=cmd_app)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MedtlError as exc:
        print(f"medtl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medtl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
