"""The served app through its API (``gradio_client`` against ``launch(prevent_thread_lock=True)``):
the same answers as ``medtl.infer``, images of the right size, readable errors."""

import zipfile

import nibabel as nib
import numpy as np
import pytest

from tests._requires import requires
from PIL import Image

from medtl.app import viewer as V
from medtl.app.app import ANALYZE_OUTPUTS, model_choices, user_message
from medtl.cli import main as medtl_main
from medtl.errors import MedtlError
from medtl.infer import Predictor
from medtl.infer.predictor import OOD_WARNING
from medtl.io import load_scan
from medtl.demo.cohort import sample_path

gradio_client = requires("gradio_client")
AppError = gradio_client.exceptions.AppError


def analyze(client, paths, model, method="Grad-CAM", alpha=0.4):
    files = [gradio_client.handle_file(str(p)) for p in paths]
    return dict(zip(ANALYZE_OUTPUTS, client.predict(files, model, method, alpha, api_name="/analyze")))


def probabilities(label):
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def image_shape(path):
    with Image.open(path) as img:
        return img.height, img.width


def test_2d_dicom_gives_the_predictors_probabilities_and_a_full_size_overlay(client, run2d):
    dcm = sample_path("ct2d")
    out = analyze(client, [dcm], "tiny2d")
    probs = probabilities(out["probabilities"])
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
    expected = Predictor.from_run(run2d, device="cpu").predict(dcm)
    assert probs == pytest.approx(expected.probabilities, abs=1e-6)  # the same code path as `medtl predict`
    assert f"Decision: {expected.decision}" in out["decision"]
    assert f"threshold {expected.threshold:.3f}" in out["decision"]
    # 128 x 128 px at 2.5 mm: square pixels, enlarged 3x to 384
    assert image_shape(out["overlay"]) == V.display_size((128, 128), 1.0) == (384, 384)
    # the download is the labelled picture: the overlay, its colour bar, method, class, probability, model
    with Image.open(out["overlay_png"]) as png:
        h, w = png.height, png.width
        text = dict(png.text)
    assert w > 384 and h > 384 and out["overlay_png"].endswith("P0001_1_gradcam.png")
    assert text["method"].startswith("Grad-CAM") and text["class"] == expected.decision and text["model"] == "tiny2d"
    assert "| Modality | CT |" in out["facts"] and "128 × 128 × 1" in out["facts"]
    assert out["preset"]["value"] == V.FILE_WINDOW and out["level"]["value"] == 40 and out["width"]["value"] == 400
    assert out["slice"]["visible"] is False and out["saliency_nifti"]["visible"] is False


def test_nifti_volume_views_follow_plane_and_slice(client, run3d, tmp_path):
    nii = sample_path("ct3d")
    out = analyze(client, [nii], "tiny3d")
    probs = probabilities(out["probabilities"])
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
    assert probs == pytest.approx(Predictor.from_run(run3d, device="cpu").predict(nii).probabilities, abs=1e-6)
    assert out["slice"]["maximum"] == 32 and out["slice"]["value"] == 16 and out["slice"]["visible"]
    assert out["preset"]["value"] == "Soft tissue"  # HU in a NIfTI without modality: CT presets
    assert image_shape(out["overlay"]) == V.display_size((64, 64), 1.0)
    # coronal: 32 slices of 5 mm over 64 columns of 4.5 mm
    slider, image, _ = client.predict("coronal", 40, 400, 0.4, "Grad-CAM", api_name="/change_plane")
    assert slider["maximum"] == 64 and slider["value"] == 32
    assert image_shape(image) == V.display_size((32, 64), 5.0 / 4.5) == (213, 384)
    first, _ = client.predict("coronal", 10, 40, 400, 0.4, "Grad-CAM", api_name="/view")
    second, png = client.predict("coronal", 40, 40, 400, 0.4, "Grad-CAM", api_name="/view")
    assert not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    assert png.endswith("_coronal040.png")
    # the downloadable saliency map lies on the scan's own grid
    sal = nib.load(out["saliency_nifti"]["value"])
    scan = load_scan(nii)
    assert sal.shape == scan.shape and np.allclose(sal.affine, scan.affine)
    data = np.asarray(sal.dataobj)
    assert data.min() >= 0.0 and data.max() <= 1.0


def test_window_preset_sets_the_sliders(client):
    analyze(client, [sample_path("ct2d")], "tiny2d")
    level, width, _, _ = client.predict("Lung", "axial", 1, 0.4, "Grad-CAM", api_name="/change_window")
    assert (level, width) == (-600.0, 1500.0)


def test_saliency_method_can_be_changed(client):
    analyze(client, [sample_path("ct2d")], "tiny2d")
    image, png, _ = client.predict("Occlusion", "axial", 1, 40, 400, 0.4, api_name="/change_method")
    assert image_shape(image) == (384, 384) and png.endswith("_occlusion.png")


def test_broken_file_gives_a_readable_message(client, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(AppError) as info:
        analyze(client, [bad], "tiny2d")
    msg = str(info.value)
    assert msg.startswith("notes.txt: not a DICOM, NIfTI, PNG, JPEG or TIFF file")
    assert "Traceback" not in msg and str(tmp_path) not in msg and "/tmp" not in msg


def test_truncated_dicom_gives_a_readable_message(client, tmp_path):
    data = sample_path("ct2d").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AppError, match=r"^cut\.dcm: ") as info:
        analyze(client, [cut], "tiny2d")
    assert "Traceback" not in str(info.value)


def test_wrong_model_for_the_scan_says_what_to_do(client):
    with pytest.raises(AppError, match="a volume with 32 slices was given to a 2D model"):
        analyze(client, [sample_path("ct3d")], "tiny2d")


def test_a_blank_image_is_refused_in_plain_words(client, tmp_path):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(blank)
    with pytest.raises(AppError, match=r"^blank\.png: every voxel has the same value \(a blank image\)"):
        analyze(client, [blank], "tiny2d")


def test_unsafe_zip_is_refused(client, tmp_path):
    z = tmp_path / "slip.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../evil.dcm", sample_path("ct2d").read_bytes())
    with pytest.raises(AppError, match="slip.zip: zip member '../../evil.dcm' escapes the archive folder"):
        analyze(client, [z], "tiny3d")


def test_series_files_and_the_series_picker(client, run3d, tmp_path):
    # several files of one series -> one volume
    files = sorted(p for p in sample_path("series").iterdir() if p.is_file())
    out = analyze(client, files, "tiny3d")
    assert "64 × 64 × 32" in out["facts"] and "32 files" in out["facts"]
    # a zip holding two series -> a picker with both; picking the other loads it
    root = sample_path("series").parent
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder in sorted(p for p in root.iterdir() if p.is_dir())[:2]:
            for f in sorted(folder.iterdir()):
                zf.write(f, f"{folder.name}/{f.name}")
    out = analyze(client, [z], "tiny3d")
    picker = out["series"]
    assert picker["visible"] and len(picker["choices"]) == 2
    other = next(value for _, value in picker["choices"] if value != picker["value"])
    again = dict(zip(ANALYZE_OUTPUTS, client.predict([gradio_client.handle_file(str(z))], other, "tiny3d", "Grad-CAM",
                                                      0.4, api_name="/pick_series")))
    assert again["series"]["value"] == other
    expected = Predictor.from_run(run3d, device="cpu").predict(load_scan(z, series=int(other))).probabilities
    assert probabilities(again["probabilities"]) == pytest.approx(expected, abs=1e-6)


def test_model_can_be_switched_and_the_card_is_shown(client, run2d):
    analyze(client, [sample_path("png")], "tiny2d")
    _, label, decision, card, image, _, _ = client.predict("tiny2d", "Grad-CAM", "axial", 1, 128, 255, 0.4,
                                                            api_name="/change_model")
    assert "Test metrics (n=" in card and "95% CI" in card and "not for diagnosis without review" in card
    assert "Decision:" in decision and sum(probabilities(label).values()) == pytest.approx(1.0)


def test_model_choices_and_cli_errors(run2d, run3d, tmp_path, capsys):
    assert model_choices([str(run2d), f"lung={run3d}"]) == {"tiny2d": run2d, "lung": run3d}
    assert list(model_choices([str(run2d), str(run2d)])) == ["tiny2d", "tiny2d (2)"]
    with pytest.raises(MedtlError, match="no model_card.json"):
        model_choices([str(tmp_path)])
    assert medtl_main(["app", "--model", str(tmp_path)]) == 2
    assert "no model_card.json (give a run directory written by `medtl train`)" in capsys.readouterr().err


def test_app_says_why_a_run_has_no_card_as_predict_does(tmp_path, capsys):
    """README's first app command, pasted before any training, said "runs/pneu: not a medtl run (no
    model_card.json)" of a folder that does not exist, and the same of an interrupted run, where `medtl
    predict` says "no such folder" or how to resume it."""
    missing = tmp_path / "runs" / "pneu"
    assert medtl_main(["app", "--model", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"medtl: error: {missing}: no such folder (give a run directory written by `medtl train`)")
    stopped = tmp_path / "stopped"
    (stopped / "checkpoints").mkdir(parents=True)
    (stopped / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(MedtlError, match=rf"resume it with `medtl train --out {stopped} --resume`$"):
        model_choices([f"chest={stopped}"])


def test_cli_binds_loopback_by_default():
    from medtl.cli import build_parser

    args = build_parser().parse_args(["app", "--model", "runs/a", "--model", "runs/b"])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.model == ["runs/a", "runs/b"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["app", "--model", "runs/a", "--share"])  # no public links offered


def test_user_message_hides_server_folders():
    assert user_message(MedtlError("/tmp/gradio/ab12/scan.dcm: truncated (re-export it)")) == \
        "scan.dcm: truncated (re-export it)"
    assert user_message(MedtlError("x.zip: supported: .nii/.nii.gz, .png/.jpg")) == \
        "x.zip: supported: .nii/.nii.gz, .png/.jpg"


def test_out_of_distribution_scan_shows_the_banner_above_the_probability(client, run2d, tmp_path):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(noise)
    expected = Predictor.from_run(run2d, device="cpu").predict(noise)
    assert expected.out_of_distribution  # far from every CT slice the tiny model saw
    out = analyze(client, [noise], "tiny2d")
    assert "Outside what this model was trained on: the probability is not meaningful" in out["banner"]
    assert f"{expected.ood_score:.3g}" in out["banner"]
    in_domain = analyze(client, [sample_path("ct2d")], "tiny2d")
    assert "Outside what this model" not in in_domain["banner"]
    # the Overlay PNG carries it too (the picture leaves the page; its label had no word of it)
    with Image.open(out["overlay_png"]) as flagged, Image.open(in_domain["overlay_png"]) as plain:
        assert flagged.text["warning"] == OOD_WARNING and "warning" not in plain.text
        assert flagged.height == plain.height  # the warning is a line of the label, drawn in the same picture


def test_every_exported_name_exists():
    """``from medtl.app.app import *`` works, and every name ``medtl.app`` exports lazily resolves."""
    import medtl.app
    import medtl.app.app as page

    assert [n for n in page.__all__ if not hasattr(page, n)] == []
    assert [n for n in medtl.app.__all__ if not hasattr(page, n) or n not in page.__all__] == []
    namespace: dict = {}
    exec("from medtl.app.app import *", namespace)
    assert set(page.__all__) <= set(namespace)
