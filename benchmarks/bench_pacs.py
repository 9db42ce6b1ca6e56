"""Benchmark: studies per second pulled from a local Orthanc, scored and pushed back, and where the
time goes (network, decode, inference, saliency + result building, storing).

A throw-away Orthanc (``medtl.pacs.orthanc.LocalOrthanc``: Debian's orthanc + DICOMweb + GDCM,
loopback only) gets the sample cohort's 40 CT DICOM slices (``sample_data/ct2d``; a 2D model
scores each slice as a study). The model is an untrained ResNet-18 (2D, 64x64) written as a run
folder: weights do not change the cost. Then, for each retrieve method (WADO-RS, C-GET, C-MOVE),
a fresh work folder goes through :func:`medtl.pacs.workflow.pacs_score` (pull -> score -> push);
results are pushed (STOW-RS) in the first round only, since pushing again stores the same
objects (same UIDs).

Fractions: ``network`` = pull + store time, ``decode`` = reading + preprocessing in
``medtl.infer.score``, ``inference`` = model time, ``saliency`` = Grad-CAM for the pushed
objects, ``build`` = SR/SC/SEG construction (saliency excluded), all over the round's wall time.

    python benchmarks/bench_pacs.py [--repeat 1] [--out benchmarks/results/pacs.json]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)
sys.path.insert(0, str(REPO))


def make_run(folder: Path) -> Path:
    from medtl.models import create
    from medtl.runs import CARD_FORMAT, save_weights, write_card
    from medtl.transforms import Preprocessing

    folder.mkdir(parents=True, exist_ok=True)
    model = create("resnet18", weights=None, in_channels=1, num_classes=2)
    save_weights(model, folder / "model.safetensors")
    prep = Preprocessing(spatial_dims=2, size=[64, 64], window="lung")
    write_card(folder, {"format": CARD_FORMAT, "name": "bench_pacs", "class_names": ["normal", "nodule"],
                        "positive_class": "nodule", "threshold": 0.5, "medtl_version": "bench",
                        "model": model.card, "preprocessing": prep.to_dict(), "files": {"weights": "model.safetensors"}})
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="rounds per retrieve method (best kept)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pacs.json"))
    args = ap.parse_args()
    refuse_foreign(args.out, SCRIPT)

    import torch

    from medtl.infer import Predictor
    from medtl.pacs import Query
    from medtl.pacs.config import PacsConfig
    from medtl.pacs.orthanc import LocalOrthanc, free_port, orthanc_missing
    from medtl.pacs.workflow import pacs_score

    why = orthanc_missing()
    if why:
        print(f"bench_pacs: {why}", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    files = sorted((REPO / "sample_data" / "ct2d").glob("*.dcm"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        listen = free_port()
        with LocalOrthanc(tmp / "orthanc", modalities={"MEDTL": ("127.0.0.1", listen)}) as pacs:
            t0 = time.perf_counter()
            for f in files:
                pacs.rest("POST", "/instances", f.read_bytes())
            upload_s = time.perf_counter() - t0
            predictor = Predictor.from_run(make_run(tmp / "run"), device="cpu")
            config = PacsConfig(url=pacs.url, host="127.0.0.1", port=pacs.dicom_port, listen_port=listen)
            first = True
            for via in ("dicomweb", "cget", "cmove"):
                best = None
                for r in range(args.repeat):
                    work = tmp / f"work-{via}-{r}"
                    t = time.perf_counter()
                    s = pacs_score(predictor, config, Query(), work, via=via, push=first, workers=0)
                    wall = time.perf_counter() - t
                    if best is None or wall < best[0]:
                        best = (wall, s, first)
                    first = False
                wall, s, pushed = best
                network = s.pull_seconds + s.store_seconds
                row = {"via": via, "pushed": pushed, "studies": s.scored, "instances": s.pulled,
                       "seconds": round(wall, 3), "studies_per_s": round(s.scored / wall, 2),
                       "pull_s": round(s.pull_seconds, 3), "score_s": round(s.score_seconds, 3),
                       "push_s": round(s.push_seconds, 3),
                       "fraction_network": round(network / wall, 3),
                       "fraction_decode": round(s.decode_seconds / wall, 3),
                       "fraction_inference": round(s.infer_seconds / wall, 3),
                       "fraction_saliency": round(s.saliency_seconds / wall, 3),
                       "fraction_build": round(max(s.build_seconds - s.saliency_seconds, 0.0) / wall, 3)}
                rows.append(row)
    print(f"{'pull via':<9} {'push':<5} {'studies':>7} {'wall s':>7} {'studies/s':>9} {'pull s':>7} {'score s':>7} "
          f"{'push s':>7} {'network':>7} {'decode':>6} {'infer':>6} {'salien':>6} {'build':>6}")
    for r in rows:
        print(f"{r['via']:<9} {'STOW' if r['pushed'] else '-':<5} {r['studies']:>7} {r['seconds']:>7.2f} "
              f"{r['studies_per_s']:>9.2f} {r['pull_s']:>7.2f} {r['score_s']:>7.2f} {r['push_s']:>7.2f} "
              f"{r['fraction_network']:>7.1%} {r['fraction_decode']:>6.1%} {r['fraction_inference']:>6.1%} "
              f"{r['fraction_saliency']:>6.1%} {r['fraction_build']:>6.1%}")
    out = {"benchmark": "pacs", "data": f"sample_data/ct2d ({len(files)} CT slices, one study each for a 2D model)",
           "model": "resnet18 2D 64x64 (untrained)", "orthanc_upload_s": round(upload_s, 3),
           "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": 2,
                       "cpu": platform.processor() or platform.machine()},
           "rows": rows}
    write_result(args.out, out, SCRIPT)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
