"""``medtl predict`` and ``medtl score``: argparse wiring (registered by :func:`medtl.cli.build_parser`).

Exit codes: 0 success; 1 ``score`` finished but some studies failed (see ``errors.csv``);
2 a fatal error (bad run directory, bad input, bad option), printed as one line by ``medtl.cli``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SALIENCY_METHODS = ("gradcam", "gradcam++", "occlusion")


def cmd_predict(args: argparse.Namespace) -> int:
    from medtl.errors import MedtlError
    from medtl.infer.predictor import Predictor, write_saliency

    out = Path(args.saliency) if args.saliency else None
    if out is not None and not out.name.lower().endswith((".png", ".nii", ".nii.gz")):
        raise MedtlError(f"{out}: --saliency must end in .png (overlay) or .nii/.nii.gz (map in the scan's geometry)")
    predictor = Predictor.from_run(args.model, device=args.device)
    from medtl.io import load_scan

    scan = load_scan(args.scan, series=args.series, progress=False)
    pred = predictor.predict(scan, saliency=args.method if out is not None else None)
    if out is not None and pred.saliency is not None:
        write_saliency(out, scan, pred.saliency)
    if args.json:
        info: dict[str, Any] = pred.to_dict()
        info["model"] = predictor.model_id
        if out is not None:
            info.setdefault("saliency", {})["path"] = str(out)
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"study: {pred.source}  shape {'x'.join(str(s) for s in pred.shape)}")
    print(f"model: {predictor.model_id}")
    for name, p in pred.probabilities.items():
        print(f"  p({name}) = {p:.4f}")
    if pred.threshold is not None:
        print(f"decision: {pred.decision}  (positive class '{pred.positive_class}' when p >= {pred.threshold:.4f})")
    else:
        print(f"decision: {pred.decision}  (most probable class)")
    print(f"preprocessing: {pred.preprocessing_text}")
    if out is not None:
        print(f"saliency ({args.method}) written to {out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from medtl.infer.score import score

    summary = score(args.model, args.input, args.out, workers=args.workers, batch_size=args.batch_size,
                    engine=args.engine, saliency_dir=args.saliency_dir, saliency_method=args.method,
                    parquet=args.parquet, progress=not args.no_progress and not args.json,
                    errors_csv=args.errors, device=args.device, ray_address=args.ray_address)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        print(summary.text())
    return summary.exit_code


def add_predict_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``medtl predict``."""
    p = subparsers.add_parser(
        "predict", help="classify one scan with a trained run: probabilities, decision at the card's threshold")
    p.add_argument("--model", required=True, help="run directory written by `medtl train`")
    p.add_argument("scan", help="DICOM file, DICOM folder or .zip, NIfTI, PNG/JPEG/TIFF")
    p.add_argument("--series", help="series index or SeriesInstanceUID (folders/zips)")
    p.add_argument("--saliency", metavar="OUT",
                   help="write a saliency map: OUT.png (overlay; 3D: middle axial slice) or OUT.nii.gz (3D map)")
    p.add_argument("--method", choices=SALIENCY_METHODS, default="gradcam", help="saliency method")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)
    return p


def add_score_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``medtl score``."""
    p = subparsers.add_parser(
        "score", help="score a folder of studies or a manifest CSV into a CSV (streamed, resumable)",
        description="Score every study under INPUT. Re-running the same command resumes: studies already in "
                    "OUT are skipped. Failures go to errors.csv; exit code 1 when any study failed.")
    p.add_argument("--model", required=True, help="run directory written by `medtl train`")
    p.add_argument("input", help="folder of studies (DICOM series, NIfTI, images) or a manifest CSV (path column)")
    p.add_argument("--out", required=True, help="scores CSV (appended to; resumable)")
    p.add_argument("--errors", help="errors CSV (default: errors.csv beside --out)")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes (0: in the main process)")
    p.add_argument("--batch-size", type=int, default=16, help="studies per model call")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local worker processes, or Ray tasks (pip install 'medtl[ray]')")
    p.add_argument("--ray-address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--saliency-dir", help="write one saliency map per study here (PNG for 2D, NIfTI for 3D)")
    p.add_argument("--method", choices=SALIENCY_METHODS, default="gradcam", help="saliency method")
    p.add_argument("--parquet", action="store_true", help="also write OUT with .parquet (needs pyarrow)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_score)
    return p
