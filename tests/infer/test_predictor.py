"""Predictor: one study -> probabilities, decision at the card's threshold, preprocessing used."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch

from medtl.cli import main
from medtl.errors import MedtlError, ScanError
from medtl.infer import Predictor
from medtl.io import load_scan
from medtl.runs import load_run

from .conftest import SAMPLE


@pytest.fixture(scope="module")
def p2d(run2d):
    return Predictor.from_run(run2d, device="cpu")


@pytest.fixture(scope="module")
def p3d(run3d):
    return Predictor.from_run(run3d, device="cpu")


def test_2d_dicom_reproduces_the_runs_test_predictions(run2d, p2d):
    rows = list(csv.DictReader(open(run2d / "predictions_test.csv")))
    assert len(rows) >= 4
    for row in rows[:4]:
        pred = p2d.predict(row["image"])
        expected = [float(row[f"p_{c}"]) for c in p2d.class_names]
        np.testing.assert_allclose(list(pred.probabilities.values()), expected, atol=1e-5)
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
        p_pos = pred.probabilities[p2d.positive_class]
        other = [c for c in p2d.class_names if c != p2d.positive_class][0]
        assert pred.decision == (p2d.positive_class if p_pos >= pred.threshold else other)
        assert pred.threshold == json.loads((run2d / "model_card.json").read_text())["threshold"]
        assert pred.predicted == max(pred.probabilities, key=pred.probabilities.get)
        assert pred.shape == [128, 128, 1] and pred.preprocessing["size"] == [32, 32]


def test_predict_batch_equals_one_by_one(p2d):
    paths = sorted((SAMPLE / "ct2d").glob("*.dcm"))[:3]
    xs = [p2d.preprocess(p) for p in paths]
    batch = p2d.predict_batch(xs)
    singles = np.stack([p2d.predict_batch([x])[0] for x in xs])
    np.testing.assert_allclose(batch, singles, atol=1e-6)
    np.testing.assert_allclose(batch.sum(1), 1.0, atol=1e-9)
    # numpy (read-only, as Ray hands them back) and tensors give the same numbers
    ro = [x.numpy().copy() for x in xs]
    for a in ro:
        a.setflags(write=False)
    np.testing.assert_array_equal(p2d.predict_batch(ro), batch)


def test_decision_is_exactly_the_threshold_rule(run2d, p2d):
    model, card, prep = load_run(run2d)
    x = p2d.preprocess(SAMPLE / "ct2d" / "P0015_1.dcm")
    p_pos = float(p2d.predict_batch([x])[0][p2d.class_names.index(p2d.positive_class)])
    at = Predictor(model, {**card, "threshold": p_pos}, prep)
    above = Predictor(model, {**card, "threshold": np.nextafter(p_pos, 1.0)}, prep)
    assert at.decide([1 - p_pos, p_pos])[1] == at.positive_class
    assert above.decide([1 - p_pos, p_pos])[1] != above.positive_class
    assert Predictor(model, {**card, "threshold": None}, prep).threshold == 0.5
    three = Predictor(model, {**card, "class_names": ["a", "b", "c"], "positive_class": None}, prep)
    assert three.threshold is None and three.decide([0.2, 0.5, 0.3]) == ("b", "b")
    with pytest.raises(MedtlError, match="NaN"):  # argmax would say class 0: a decision nobody made
        at.decide([float("nan"), float("nan")])


def test_probability_and_threshold_never_print_alike_when_they_differ():
    from medtl.infer import Prediction

    def texts(prob, thr, digits=3):
        return Prediction({"0": 1 - prob, "1": prob}, "1", "1" if prob >= thr else "0", thr, "1", "x", [1], {},
                          "").threshold_texts(digits)

    assert texts(0.42, 0.5) == ("0.420", "0.500")
    assert texts(0.99999999999, 0.9999999999999, 4) == ("0.99999999999", "1.00000000000")  # was 1.0000 vs 1.0000
    assert texts(0.5, 0.5) == ("0.500", "0.500")
    p, t = texts(0.3, float(np.nextafter(0.3, 1.0)))
    assert p != t and float(p) < float(t)


def test_3d_nifti_volume(run3d, p3d):
    path = SAMPLE / "ct3d" / "P0031.nii.gz"
    pred = p3d.predict(path)
    model, _, prep = load_run(run3d)
    with torch.no_grad():
        expected = torch.softmax(model(prep(path)[None]), 1)[0].numpy()
    np.testing.assert_allclose(list(pred.probabilities.values()), expected, atol=1e-6)
    assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
    assert pred.shape == list(load_scan(path).shape) and pred.shape[2] > 1
    assert pred.preprocessing_text.startswith("3D") and "16x16x16" in pred.preprocessing_text
    # a DICOM series folder is a volume too; same decision rule
    series = p3d.predict(SAMPLE / "series" / "P0041")
    assert series.shape[2] == 32


def test_describe_quotes_class_names_that_hold_a_comma_and_names_the_auc_of_more_classes(tmp_path):
    """'Classes: mild, normal, sévère, grade 3' read as four classes, in the app's model card too; 'auc' of three
    classes did not say which (the one-vs-rest macro mean)."""
    from medtl.runs import write_card
    from tests.conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run", ("mild", "normal", "sévère, grade 3"))
    card = json.loads((run / "model_card.json").read_text())
    card["training"] = {"data": {"source": "m.csv", "format": "manifest",
                                 "counts": {"train": {"mild": 1, "normal": 2, "sévère, grade 3": 3}}}}
    card["metrics"] = {"test": {"n": 9, "auc": 0.75, "accuracy": 0.5}}
    write_card(run, card)
    text = Predictor.from_run(run, device="cpu").describe()
    assert 'Classes: "mild", "normal", "sévère, grade 3"' in text
    assert 'Trained on: m.csv (manifest); train "mild": 1, "normal": 2, "sévère, grade 3": 3' in text
    assert "Test metrics (n=9): macro auc (one-vs-rest) 0.750, accuracy 0.500" in text
    assert "Classes: a, b" in Predictor.from_run(write_untrained_run(tmp_path / "ab"), device="cpu").describe()


def test_model_refuses_input_of_the_wrong_dimensionality(p2d, p3d):
    with pytest.raises(ScanError, match="2D model"):
        p2d.predict(SAMPLE / "ct3d" / "P0031.nii.gz")
    with pytest.raises(ScanError, match="3D model"):
        p3d.predict(SAMPLE / "ct2d" / "P0015_1.dcm")


def test_describe_summarises_the_model_card(p2d):
    text = p2d.describe()
    assert "Trained on: manifest.csv" in text and "Test metrics (n=16)" in text and "auc" in text
    assert "Intended use:" in text and "not for diagnosis" in text
    assert f">= {p2d.threshold:.4f}" in text and "window lung" in text
    n_val = sum(p2d.card["training"]["data"]["counts"]["val"].values())
    assert (f"Out-of-distribution check: mahalanobis score of the network's pooled features (higher = further from "
            f"the training images); a scan scoring above {p2d.ood.thresholds['mahalanobis']:.4g} (the 0.975 quantile "
            f"over {n_val} validation images{', few: a rough threshold' if n_val < 20 else ''}) is flagged") in text
    assert "Training domain: CT (from the images' headers), gray images: a scan of another modality" in text


def test_describe_says_a_threshold_from_few_validation_images_is_rough(p2d):
    import dataclasses

    few = Predictor(p2d.model, p2d.card, p2d.preprocessing, device="cpu",
                    ood=dataclasses.replace(p2d.ood, n_calibration=5))
    assert "(the 0.975 quantile over 5 validation images, few: a rough threshold) is flagged" in few.describe()


def test_describe_says_when_the_model_cannot_refuse_another_modality(p2d):
    """A cohort of PNGs or arrays without data.modality records none: the card summary says the header
    check cannot refuse a CT given to, say, a chest X-ray model."""
    import copy

    card = copy.deepcopy(p2d.card)
    card["domain"].update(families=[], modalities=[], source="unknown")
    other = Predictor(p2d.model, card, p2d.preprocessing, device="cpu", ood=p2d.ood)
    assert ("Training domain: gray images, no modality recorded (its images carried none and data.modality was not "
            "set): a scan of another modality is not refused by its header") in other.describe()


def test_from_run_needs_a_run_directory(tmp_path):
    with pytest.raises(MedtlError, match="model_card.json"):
        Predictor.from_run(tmp_path)


@pytest.mark.parametrize("members", ["two", 0, True, 10**6])
def test_a_card_with_a_broken_ensemble_count_is_refused_in_one_line(run2d, tmp_path, members):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run2d, run)
    card = json.loads((run / "model_card.json").read_text())
    card["model"]["ensemble"] = members
    (run / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(MedtlError, match="model.ensemble is .* not the member count of model.safetensors"):
        load_run(run)


def test_card_positive_class_must_be_a_class(run2d):
    model, card, prep = load_run(run2d)
    bad = copy.deepcopy(card)
    bad["positive_class"] = "tumour"
    with pytest.raises(MedtlError, match="positive_class"):
        Predictor(model, bad, prep)


def test_cli_predict_json_and_text(run2d, p2d, capsys):
    scan = SAMPLE / "ct2d" / "P0016_1.dcm"
    assert main(["predict", "--model", str(run2d), str(scan), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = p2d.predict(scan)
    assert out["probabilities"] == pytest.approx(expected.probabilities, abs=1e-7)
    assert out["decision"] == expected.decision and out["threshold"] == expected.threshold
    assert out["preprocessing"]["window"] == "lung" and out["model"] == p2d.model_id
    assert main(["predict", "--model", str(run2d), str(scan)]) == 0
    text = capsys.readouterr().out
    assert f"decision: {expected.decision}" in text and "preprocessing: 2D, window lung" in text


def test_cli_predict_errors_are_one_line(run2d, capsys):
    assert main(["predict", "--model", str(run2d), str(SAMPLE / "ct3d" / "P0031.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "2D model" in err
    assert main(["predict", "--model", str(run2d), str(SAMPLE / "ct2d" / "P0016_1.dcm"),
                 "--saliency", "out.jpg"]) == 2
    assert ".png" in capsys.readouterr().err


def test_predictor_and_from_run_share_the_device_default(run2d, monkeypatch):
    """``Predictor(...)`` ran on the CPU while ``Predictor.from_run`` took a GPU when there was one: one
    rule, ``"auto"``, for both, and the model goes where the inputs will."""
    import inspect

    import medtl.infer.predictor as predictor_module

    defaults = {inspect.signature(f).parameters["device"].default for f in (Predictor, Predictor.from_run)}
    assert defaults == {"auto"}
    seen: list[str] = []
    monkeypatch.setattr(predictor_module, "resolve_device",
                        lambda name="auto": seen.append(name) or torch.device("cpu"))
    model, card, prep = load_run(run2d)
    built = Predictor(model, card, prep)
    assert seen == ["auto"] and built.device == torch.device("cpu")
    assert next(built.model.parameters()).device == torch.device("cpu")


def test_describe_says_a_null_test_metric_is_undefined(p2d):
    one_class = copy.copy(p2d)
    one_class.card = {**p2d.card, "metrics": {"test": {"n": 8, "auc": None, "accuracy": 0.75, "sensitivity": 0.75,
                                                       "specificity": None, "ci": {"accuracy": [0.5, 1.0]}}}}
    line = next(s for s in one_class.describe().splitlines() if s.startswith("Test metrics"))
    assert line == ("Test metrics (n=8): auc undefined (a class absent from the test set), accuracy 0.750 "
                    "(95% CI 0.500-1.000), sensitivity 0.750, specificity undefined (a class absent from the test set)")


def test_the_three_files_readme_names_are_all_prediction_needs(run2d, tmp_path):
    """README tells a site handing a model on to give the card, the weights and the OOD statistics and keep
    the rest (predictions_*.csv name each case's file): a folder of just those predicts the same."""
    import shutil
    from pathlib import Path

    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert ("give `model_card.json`, `model.safetensors` and `ood.safetensors`: that is all `medtl predict`, `score` "
            "and `app` read") in readme
    card = json.loads((run2d / "model_card.json").read_text())
    assert {card["files"]["weights"], card["files"]["ood"]} == {"model.safetensors", "ood.safetensors"}
    handed = tmp_path / "handed"
    handed.mkdir()
    for name in ("model_card.json", "model.safetensors", "ood.safetensors"):
        shutil.copy(run2d / name, handed / name)
    scan = SAMPLE / "ct2d" / "P0015_1.dcm"
    here, there = Predictor.from_run(run2d, device="cpu"), Predictor.from_run(handed, device="cpu")
    a, b = here.predict(scan), there.predict(scan)
    assert a.probabilities == b.probabilities and a.ood_score == b.ood_score and a.ood_score is not None


@pytest.mark.parametrize("method, why", [("gradcam", "its feature grid is too coarse"),
                                         ("occlusion", "does not move when the input changes")])
def test_a_flat_map_says_why_in_the_terms_of_its_method(run2d, monkeypatch, method, why):
    """A flat occlusion map (a probability stuck at 1.0) was said to come from a coarse feature grid, which
    occlusion does not have."""
    import medtl.explain
    from medtl.io import Scan, load_scan

    scan = load_scan(SAMPLE / "ct2d" / "P0015_1.dcm")
    monkeypatch.setattr(medtl.explain, "saliency_for_scan",
                        lambda *a, **k: (Scan(np.zeros(scan.shape, np.float32), scan.affine), {"target": 1}))
    pred = Predictor.from_run(run2d, device="cpu").predict(scan, saliency=method)
    assert why in pred.saliency_info["note"] and "it locates nothing" in pred.saliency_info["note"]


def test_describe_gives_the_kappa_and_per_class_figures_of_ordered_grades(tmp_path):
    """A card of three grades showed only the macro AUC and accuracy: not the quadratic weighted kappa ordered
    grades are reported by, nor which grade the model misses. A card written before keeps its one line."""
    from medtl.runs import write_card
    from medtl.train.metrics import evaluate_predictions
    from tests.conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run", ("none", "mild", "severe, grade 2"))
    y, decided = [0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 2, 0]
    p = np.full((7, 3), 0.1)
    p[np.arange(7), decided] = 0.8
    card = json.loads((run / "model_card.json").read_text())
    test = evaluate_predictions(y, p, bootstrap=100, class_names=card["class_names"])
    assert test["qwk"] == pytest.approx(4 / 9, abs=1e-12)  # 1 - sum w O / sum w E = 1 - 5 / 9
    lo, hi = test["ci"]["qwk"]
    assert lo < 0 < 4 / 9 < hi
    card["metrics"] = {"test": test}
    write_card(run, card)
    lines = Predictor.from_run(run, device="cpu").describe().splitlines()
    metrics = next(s for s in lines if s.startswith("Test metrics"))
    assert f"quadratic weighted kappa 0.444 (95% CI {lo:.3f} to {hi:.3f})" in metrics
    assert metrics.startswith("Test metrics (n=7): macro auc (one-vs-rest) 0.794")
    assert ('Per class (test, one-vs-rest): "none" sensitivity 0.500, ppv 0.500, auc 0.650 (n=2); '
            '"mild" sensitivity 1.000, ppv 0.667, auc 0.900 (n=2); '
            '"severe, grade 2" sensitivity 0.667, ppv 1.000, auc 0.833 (n=3)') in lines
    card["metrics"] = {"test": {"n": 7, "auc": 0.794, "accuracy": 0.714}}  # written before medtl gave them
    write_card(run, card)
    old = Predictor.from_run(run, device="cpu").describe()
    assert "Test metrics (n=7): macro auc (one-vs-rest) 0.794, accuracy 0.714\n" in old and "Per class" not in old
