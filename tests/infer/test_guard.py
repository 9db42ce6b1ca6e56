"""Every prediction passes the training-domain checks and carries an OOD score (issue 17)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medtl.cli import main
from medtl.demo.cohort import sample_path
from medtl.errors import DomainError
from medtl.infer import Predictor
from medtl.io import load_scan


def test_card_records_domain_ood_and_degenerate_verdict(run2d):
    card = json.loads((run2d / "model_card.json").read_text())
    assert card["domain"]["families"] == ["CT"] and card["domain"]["photometric"] == ["gray"]
    assert card["domain"]["spatial_dims"] == 2 and card["domain"]["source"] == "headers"
    lo, hi = card["domain"]["pixel_spacing_mm"]
    assert 0 < lo <= hi
    assert card["ood"]["method"] in card["ood"]["thresholds"] and (run2d / card["ood"]["file"]).is_file()
    assert set(card["degenerate"]) >= {"degenerate", "reasons", "output_sd"}
    from medtl.explain import DEFAULT_METHOD

    sal = card["saliency"]  # the sample cohort's validation positives have lesion masks
    assert sal["method"] == DEFAULT_METHOD and sal["n"] >= 1 and 0.0 <= sal["pointing_game"] <= 1.0


def test_another_modality_is_refused_and_the_override_predicts_with_a_warning(run2d):
    scan = load_scan(sample_path("ct2d"))
    scan.modality = "US"
    with pytest.raises(DomainError, match="model trained on CT, this is ultrasound"):
        Predictor.from_run(run2d, device="cpu").predict(scan)
    pred = Predictor.from_run(run2d, device="cpu", allow_other_domain=True).predict(scan)
    assert any("override" in w and "ultrasound" in w for w in pred.warnings)
    assert sum(pred.probabilities.values()) == pytest.approx(1.0)


def test_every_prediction_has_a_score_consistent_with_the_batch_path(run2d):
    p = Predictor.from_run(run2d, device="cpu")
    path = sample_path("ct2d")
    pred = p.predict(path)
    probs, scores = p.score_batch(p.preprocess(path)[None])
    assert pred.ood_score == pytest.approx(float(scores[0]), rel=1e-9)
    assert pred.probabilities == pytest.approx(dict(zip(p.class_names, probs[0])), abs=1e-12)
    assert pred.ood_threshold == p.ood.thresholds[pred.ood_method]
    assert pred.out_of_distribution == (pred.ood_score > pred.ood_threshold)
    # an image of noise is far from every CT slice the model saw
    noise = p.predict(np.random.default_rng(0).normal(0, 1000, (64, 64)).astype(np.float32))
    assert noise.out_of_distribution and noise.warnings[0].startswith("outside what this model was trained on")


def test_a_blank_image_is_refused_in_predict_score_and_the_api(run2d, tmp_path, capsys):
    """A constant image is not a scan: the Mahalanobis score passed 28 x 28 black and white PNGs as 'within
    the training distribution' of a chest X-ray model, with a decision. Refused everywhere, overridable."""
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / "black.png")
    shutil.copy(sample_path("ct2d"), folder / "ct.dcm")
    p = Predictor.from_run(run2d, device="cpu")
    with pytest.raises(DomainError, match="black.png: every voxel has the same value"):
        p.predict(folder / "black.png")
    forced = Predictor.from_run(run2d, device="cpu", allow_other_domain=True).predict(folder / "black.png")
    assert any("override" in w and "same value" in w for w in forced.warnings)
    assert main(["predict", "--model", str(run2d), str(folder / "black.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "black.png: every voxel has the same value" in err
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(run2d), str(folder), "--out", str(out), "--workers", "0",
                 "--no-progress"]) == 1
    capsys.readouterr()
    assert [r.split(",")[1] for r in out.read_text().splitlines()[1:]] == [str(folder / "ct.dcm")]
    errors = (tmp_path / "scores.errors.csv").read_text()
    assert "black.png" in errors and ",domain," in errors and "same value" in errors


def test_an_old_card_still_loads_with_a_note(run2d, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run2d, old)
    card = json.loads((old / "model_card.json").read_text())
    for key in ("domain", "ood", "degenerate"):
        card.pop(key)
    (old / "model_card.json").write_text(json.dumps(card))
    (old / "ood.safetensors").unlink()
    pred = Predictor.from_run(old, device="cpu").predict(sample_path("ct2d"))
    assert pred.ood_score is None and pred.out_of_distribution is None
    assert any("out-of-distribution score unavailable" in w for w in pred.warnings)


def test_degenerate_flag_reaches_every_prediction(run2d, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run2d, bad)
    card = json.loads((bad / "model_card.json").read_text())
    card["degenerate"] = {"degenerate": True, "reasons": ["near-constant outputs on the validation split"],
                          "output_sd": 0.0, "n": 4}
    (bad / "model_card.json").write_text(json.dumps(card))
    pred = Predictor.from_run(bad, device="cpu").predict(sample_path("ct2d"))
    assert any("did not learn to separate the classes" in w for w in pred.warnings)


def test_cli_refusal_names_both_sides_and_the_flag(run2d, tmp_path, capsys):
    import pydicom

    ds = pydicom.dcmread(sample_path("ct2d"))
    ds.Modality = "MR"
    mr = tmp_path / "as_mr.dcm"
    ds.save_as(mr)
    assert main(["predict", "--model", str(run2d), str(mr)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "as_mr.dcm" in err and "trained on CT, this is MR" in err
    assert "--allow-other-domain" in err
    assert main(["predict", "--model", str(run2d), str(mr), "--allow-other-domain", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ood_score"] is not None and any("override" in w for w in out["warnings"])


def test_a_run_whose_guard_could_not_be_fitted_says_why(train_tiny, tmp_path_factory, capsys):
    """One validation image: no threshold can be calibrated. Predictions said the card was 'written before
    medtl recorded it' (and training 'no validation split'); both now say how many images there were."""
    import csv

    from medtl.demo.cohort import sample_path as sp

    root = sp("ct2d").parent.parent
    rows = [r for r in csv.DictReader(open(root / "manifest.csv")) if r["kind"] == "ct2d"]
    first_val = next(r for r in rows if r["split"] == "val")
    rows = [r for r in rows if r["split"] != "val" or r is first_val]
    manifest = tmp_path_factory.mktemp("one-val") / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "patient_id", "kind"])
        w.writerows([str(root / r["path"]), r["label"], r["split"], r["patient_id"], r["kind"]] for r in rows)
    run = train_tiny("oneval", f"data.path={manifest}", "preprocess.size=[32,32]", "train.epochs=1",
                     "eval.bootstrap=20", "data.num_workers=0")
    card = json.loads((run / "model_card.json").read_text())
    assert card["ood"] is None and card["ood_unavailable"].startswith("1 validation image(s)")
    pred = Predictor.from_run(run, device="cpu").predict(sample_path("ct2d"))
    assert pred.ood_score is None
    assert "out-of-distribution score unavailable (1 validation image(s): its threshold needs at least 2, so it " \
           "was not fitted)" in pred.warnings
    assert not any("written before" in w for w in pred.warnings)


def test_a_saliency_picture_of_a_scan_outside_the_training_data_says_so(run2d, tmp_path):
    """`predict --saliency` and `score --saliency-dir` wrote the overlay of a scan flagged out of distribution like
    any other: the picture travels without the banner that went with its probability."""
    from PIL import Image

    from medtl.infer import score
    from medtl.infer.predictor import OOD_WARNING, write_saliency

    noise = tmp_path / "in" / "noise.png"
    noise.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(noise)
    shutil.copy(sample_path("ct2d"), noise.parent / "ct.dcm")
    p = Predictor.from_run(run2d, device="cpu")
    assert p.predict(noise).out_of_distribution and not p.predict(noise.parent / "ct.dcm").out_of_distribution
    assert main(["predict", "--model", str(run2d), str(noise), "--saliency", str(tmp_path / "noise.png")]) == 0
    assert main(["predict", "--model", str(run2d), str(noise.parent / "ct.dcm"), "--saliency",
                 str(tmp_path / "ct.png")]) == 0
    score(run2d, noise.parent, tmp_path / "s" / "scores.csv", workers=0, progress=False, saliency_dir=tmp_path / "maps")
    maps = {f.name.split(".")[0].split("_")[0]: f for f in (tmp_path / "maps").glob("*.png")}
    for flagged, plain in ((tmp_path / "noise.png", tmp_path / "ct.png"), (maps["noise"], maps["ct"])):
        with Image.open(flagged) as f, Image.open(plain) as c:
            assert f.text["warning"] == OOD_WARNING and "warning" not in c.text
    scan = load_scan(noise)
    sal, _ = p.saliency(scan, "gradcam", target=0)
    for labelled in (False, True):  # the picture for people carries it as its last line
        a = write_saliency(tmp_path / f"a{labelled}.png", scan, sal, labelled=labelled, warning=OOD_WARNING)
        b = write_saliency(tmp_path / f"b{labelled}.png", scan, sal, labelled=labelled)
        with Image.open(a) as x, Image.open(b) as y:
            same = np.array_equal(np.asarray(x.convert("RGB")), np.asarray(y.convert("RGB")))
            assert same is (not labelled)
