"""Saliency from predict and from batch scoring (medtl.explain does the maps; here: wiring and files)."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medtl.cli import main
from medtl.infer import Predictor, score
from medtl.io import load_scan

from .conftest import SAMPLE


def test_predict_saliency_is_in_the_scans_geometry(run3d):
    p = Predictor.from_run(run3d, device="cpu")
    path = SAMPLE / "ct3d" / "P0032.nii.gz"
    pred = p.predict(path, saliency="gradcam")
    scan = load_scan(path)
    assert pred.saliency.shape == scan.shape
    np.testing.assert_array_equal(pred.saliency.affine, scan.affine)
    assert 0.0 <= pred.saliency.array.min() and pred.saliency.array.max() <= 1.0
    assert pred.saliency_info["target"] == p.class_names.index(pred.decision)
    assert pred.to_dict()["saliency"]["method"] == "gradcam"


def test_cli_predict_writes_png_and_nifti(tmp_path, run2d, run3d, capsys):
    png2d = tmp_path / "s2d.png"
    assert main(["predict", "--model", str(run2d), str(SAMPLE / "ct2d" / "P0015_1.dcm"), "--saliency", str(png2d)]) == 0
    assert Image.open(png2d).size == (128, 128) and Image.open(png2d).mode == "RGB"
    nii = tmp_path / "s3d.nii.gz"
    vol = SAMPLE / "ct3d" / "P0031.nii.gz"
    assert main(["predict", "--model", str(run3d), str(vol), "--saliency", str(nii), "--json"]) == 0
    img, src = nib.load(nii), nib.load(vol)
    assert img.shape == src.shape
    np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
    png3d = tmp_path / "s3d.png"
    assert main(["predict", "--model", str(run3d), str(vol), "--saliency", str(png3d)]) == 0
    assert Image.open(png3d).size == (64, 64)  # an axial slice of the 64x64x32 volume
    peak = int(np.argmax(nib.load(nii).get_fdata().max(axis=(0, 1))))  # the map written above (RAS: k kept)
    assert Image.open(png3d).text["slice"] == f"axial {peak + 1} of 32"
    assert "saliency (hirescam) of class " in capsys.readouterr().out  # the default method


def test_batch_saliency_dir_one_map_per_study(tmp_path, run3d):
    folder = tmp_path / "in"
    (folder / "nii").mkdir(parents=True)
    shutil.copy(SAMPLE / "ct3d" / "P0033.nii.gz", folder / "nii" / "a.nii.gz")
    shutil.copytree(SAMPLE / "series" / "P0044", folder / "P0044")
    maps = folder / "maps"  # inside the input: must not be taken for studies on the re-run
    out = tmp_path / "scores.csv"
    summary = score(run3d, folder, out, workers=0, saliency_dir=maps, progress=False)
    assert (summary.scored, summary.failed) == (2, 0)
    written = sorted(p.name for p in maps.iterdir())
    assert len(written) == 2 and all(n.endswith(".nii.gz") for n in written)
    assert any(n.startswith("a_") for n in written) and any(n.startswith("P0044_") for n in written)
    again = score(run3d, folder, out, workers=0, saliency_dir=maps, progress=False)
    assert (again.scored, again.skipped, again.failed) == (0, 2, 0)


def test_a_flat_map_says_it_locates_nothing_in_predict_cli_and_score(tmp_path, run3d, capsys):
    """Grad-CAM at the last stage of a 16^3 ResNet is one voxel: the map written was all zeros, silently."""
    p = Predictor.from_run(run3d, device="cpu")
    vol = SAMPLE / "ct3d" / "P0032.nii.gz"
    flat = p.predict(vol, saliency="gradcam")
    assert not flat.saliency.array.any()
    assert "is the same everywhere" in flat.saliency_info["note"] and "(e.g. hirescam)" in flat.saliency_info["note"]
    assert flat.saliency.array.shape == load_scan(vol).shape  # still written on the scan's grid
    fine = p.predict(vol, saliency="hirescam")
    assert fine.saliency.array.any() and "note" not in fine.saliency_info
    assert main(["predict", "--model", str(run3d), str(vol), "--method", "gradcam",
                 "--saliency", str(tmp_path / "g.nii.gz")]) == 0
    assert "WARNING: the saliency map (Grad-CAM" in capsys.readouterr().out
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(vol, folder / "a.nii.gz")
    out = tmp_path / "scores.csv"
    score(run3d, folder, out, workers=0, saliency_dir=tmp_path / "maps", saliency_method="gradcam", progress=False)
    assert "is the same everywhere" in out.read_text()


def test_a_3d_overlay_shows_the_slice_where_the_map_peaks_not_the_middle_one(tmp_path):
    """The middle axial slice often missed what the model looked at (the lesion on slices 14-21, the map's
    peak on 20, the PNG showed 16); a flat map still shows the middle one."""
    from medtl.explain import display_slice, heatmap_overlay, overlay_view
    from medtl.infer import write_saliency
    from medtl.io import Scan

    rng = np.random.default_rng(0)
    scan = Scan(rng.normal(size=(16, 12, 32)).astype(np.float32), np.diag([0.8, 0.8, 2.0, 1.0]), modality="CT")
    blob = np.zeros(scan.shape, np.float32)
    blob[5:9, 4:7, 20] = 1.0
    blob[5:9, 4:7, 19] = 0.6
    sal = scan.with_array(blob, modality="SAL")
    image, shown, index = overlay_view(scan, sal)
    assert index == 20
    assert overlay_view(scan, sal.with_array(np.zeros_like(blob)))[2] == 16
    out = write_saliency(tmp_path / "o.png", scan, sal)
    expected = heatmap_overlay(display_slice(image.array, 20, "axial"), display_slice(shown.array, 20, "axial"))
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), expected)
    assert Image.open(out).text["slice"] == "axial 21 of 32"


def test_predict_with_saliency_preprocesses_the_scan_once_and_gives_the_same_map(run2d, monkeypatch):
    """The score and the map share one preprocessing (resizing a 4000 px radiograph is the costly step;
    it ran three times with test-time views), and the map is the one computed on its own."""
    from medtl.transforms.load import LoadScan
    from medtl.transforms.tta import View

    p = Predictor.from_run(run2d, device="cpu")
    p.views = [View(), View(rotate_deg=5.0)]  # as a card with eval.tta gives
    scan = load_scan(SAMPLE / "ct2d" / "P0015_1.dcm")
    calls = []
    real = LoadScan.__call__
    monkeypatch.setattr(LoadScan, "__call__", lambda self, x: calls.append(1) or real(self, x))  # every pipeline's start
    pred = p.predict(scan, saliency="gradcam")
    assert len(calls) == 1
    alone, info = p.saliency(scan, "gradcam", target=pred.saliency_info["target"])
    np.testing.assert_array_equal(pred.saliency.array, alone.array)
    assert pred.saliency_info["probabilities"] == pytest.approx(list(pred.probabilities.values()), abs=1e-12)
    assert info["probabilities"] == pytest.approx(pred.saliency_info["probabilities"], abs=1e-12)


def test_cli_predict_shows_occlusions_progress_on_stderr_but_not_with_json(tmp_path, run2d, capfd):
    """Occlusion is the slow map (a 3D one takes minutes): ``medtl predict`` shows its windows as a progress
    bar with the time left, on stderr; ``--json`` keeps both streams to the JSON alone."""
    scan = str(SAMPLE / "ct2d" / "P0015_1.dcm")
    assert main(["predict", "--model", str(run2d), scan, "--saliency", str(tmp_path / "a.png"),
                 "--method", "occlusion"]) == 0
    assert "100%" in capfd.readouterr().err
    assert main(["predict", "--model", str(run2d), scan, "--saliency", str(tmp_path / "b.png"),
                 "--method", "occlusion", "--json"]) == 0
    assert "%" not in capfd.readouterr().err
