"""Regenerate ``docs/app.png``: the medtl app in headless Chromium after analysing a built-in sample.

    python scripts/app_screenshot.py                           # trains the tiny sample model first (~1 min)
    python scripts/app_screenshot.py --model runs/demo128 --model runs/tiny3d

The README picture was made with an EfficientNet-Lite0 (ImageNet start) fine-tuned on the
full synthetic cohort at 128 px, whose saliency (the app's default method) points at the lesion:

    medtl sample-data /tmp/cohort --size full
    medtl train --config demo --out runs/demo128 data.path=/tmp/cohort/manifest.csv \
        "preprocess.size=[128,128]" train.epochs=6
    python scripts/app_screenshot.py --model "CT nodule 2D=runs/demo128" --model "CT nodule 3D (tiny)=runs/tiny3d"

(``runs/tiny3d``: the sample_tiny recipe with ``data.filter={kind: ct3d} preprocess.spatial_dims=3
preprocess.size=[16,16,16]``, a second model to choose from in the page.)

Needs Debian's Chromium (``apt-get install chromium``) and Playwright for Python; Playwright's
own browser download is not used. The sample shown follows the first model: a CT slice (DICOM)
for a 2D model, a CT volume (NIfTI) for a 3D one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Headless Chromium on a closed network, as root (no sandbox, no background traffic).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def train_tiny(out: Path) -> Path:
    """The quick sample model (the sample_tiny recipe on the committed sample cohort)."""
    from medtl.config import load_config
    from medtl.train.run import train

    cfg = load_config(REPO / "configs" / "sample_tiny.yaml",
                      [f"data.path={REPO / 'sample_data' / 'manifest.csv'}", "data.num_workers=0"])
    train(cfg, out, progress=True)
    return out


def shoot(models: dict[str, Path], out: Path, sample: str | None, method: str, width: int, height: int) -> Path:
    from playwright.sync_api import expect, sync_playwright

    from medtl.app.app import DEFAULT_METHOD_LABEL, build_app, launch
    from medtl.infer import Predictor
    from medtl.demo.cohort import sample_path

    first = next(iter(models))
    if sample is None:
        sample = "ct3d" if Predictor.from_run(models[first], device="cpu").spatial_dims == 3 else "ct2d"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    demo = build_app(models, device="cpu")
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            if method != DEFAULT_METHOD_LABEL:  # the page opens on its default
                page.get_by_label(method, exact=True).check()
            page.locator("#medtl-upload input[type=file]").set_input_files(str(sample_path(sample)))
            expect(page.locator("#medtl-decision")).to_contain_text("Decision:", timeout=300_000)
            page.wait_for_timeout(1000)  # let the image and bars finish their transitions
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        demo.close()
    from PIL import Image

    # 256 colours without dithering: visually the same page at a third of the bytes (kept in git).
    with Image.open(out) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", metavar="[NAME=]RUN_DIR",
                        help="run folder(s) to serve; default: train the tiny sample model first")
    parser.add_argument("--sample", choices=["ct2d", "ct3d", "png"], help="built-in sample to show (default: by model)")
    from medtl.app.app import DEFAULT_METHOD_LABEL, METHODS

    parser.add_argument("--method", default=DEFAULT_METHOD_LABEL, choices=list(METHODS),
                        help=f"saliency method shown (default: the app's, {DEFAULT_METHOD_LABEL})")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "app.png")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)

    from medtl.app.app import model_choices

    with tempfile.TemporaryDirectory(prefix="medtl-shot-") as tmp:
        specs = args.model or [f"sample_tiny={train_tiny(Path(tmp) / 'sample_tiny')}"]
        out = shoot(model_choices(specs), args.out, args.sample, args.method, args.width, args.height)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
