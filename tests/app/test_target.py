""""Class the map explains": the page's saliency map, its labelled PNG and its NIfTI explain the class chosen,
exactly as ``Predictor.saliency(..., target=...)`` (``medtl predict --target``) does; by default, and after a new
scan or model, the decision, as before."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medtl.app import viewer as V
from medtl.app.app import ANALYZE_OUTPUTS, DEFAULT_METHOD_LABEL, EXPLAIN_DECISION, METHODS, MedtlApp
from medtl.demo.cohort import sample_path
from medtl.errors import MedtlError
from medtl.infer import Predictor
from medtl.io import load_scan

from tests._requires import requires


def quiet(*args, **kwargs) -> None:
    """A progress callback that shows nothing."""


def analyzed(app: MedtlApp, path, model: str, method: str = "Grad-CAM") -> dict:
    return dict(zip(["state", *ANALYZE_OUTPUTS], app.analyze(None, [str(path)], None, model, method, 0.4,
                                                             progress=quiet)))


def expected_map(run, path, method: str, class_name: str) -> np.ndarray:
    """What ``medtl predict --target CLASS --saliency`` computes: the map of that class."""
    pred = Predictor.from_run(run, device="cpu")
    return pred.saliency(load_scan(path), method, target=pred.class_names.index(class_name))[0].array


def png_text(path) -> dict:
    with Image.open(path) as png:
        return dict(png.text)


@pytest.fixture(scope="module")
def three(run3class):
    return MedtlApp({"three": run3class}, device="cpu")


def test_a_class_not_decided_is_explained_in_the_map_the_picture_and_the_download(three, run3class):
    dcm = sample_path("ct2d")
    out = analyzed(three, dcm, "three")
    s = out["state"]
    decision = s.prediction.decision
    assert sorted(s.prediction.probabilities) == ["lesion", "normal", "other"]
    other = next(c for c in ("lesion", "normal", "other") if c != decision)
    s2, shown, png, _ = three.change_target(s, other, "axial", 1, 40, 400, 0.4, "Grad-CAM", progress=quiet)
    assert s2 is s and s.target == other
    drawn = s.saliency["three", "gradcam", other][1].array  # the map the picture and the downloads are made from
    np.testing.assert_array_equal(drawn, expected_map(run3class, dcm, "gradcam", other))
    assert not np.array_equal(drawn, expected_map(run3class, dcm, "gradcam", decision))
    assert not np.array_equal(shown, out["overlay"])  # the picture changed with the map
    text = png_text(png)
    assert text["class"] == other and text["probability"] == f"{s.prediction.probabilities[other]:.4f}"
    assert png.endswith(f"P0001_1_gradcam_class-{other}.png")
    # the picture's own label: that class and its probability (pixel for pixel what medtl.app.viewer draws for it)
    _, plain, *_ = three._draw(s, "axial", 1, 40, 400, 0.4, "Grad-CAM")
    label = V.labelled(plain, method=text["method"], class_name=other, probability=s.prediction.probabilities[other],
                       model="three")
    with Image.open(png) as picture:
        np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), label)
    # the line under the picture (the picture's description for screen readers) says which class the colour shows
    info = three.view_info_page(s, "axial", 1, 40, 400, 0.4, "Grad-CAM")
    assert f"saliency map of {other} (p = {s.prediction.probabilities[other]:.3f})" in info
    # the decision again: its map, its label and the file names of before
    _, back, png, _ = three.change_target(s, EXPLAIN_DECISION, "axial", 1, 40, 400, 0.4, "Grad-CAM", progress=quiet)
    assert s.target is None and png.endswith("P0001_1_gradcam.png") and png_text(png)["class"] == decision
    np.testing.assert_array_equal(back, out["overlay"])


def test_by_default_the_map_explains_the_decision_as_before(three, run3class):
    dcm = sample_path("ct2d")
    out = analyzed(three, dcm, "three")
    s = out["state"]
    decision = s.prediction.decision
    assert s.target is None and list(s.saliency) == [("three", "gradcam", decision)]
    np.testing.assert_array_equal(s.saliency["three", "gradcam", decision][1].array,
                                  expected_map(run3class, dcm, "gradcam", decision))
    text = png_text(out["overlay_png"])
    assert text["class"] == decision and text["probability"] == f"{s.prediction.probabilities[decision]:.4f}"
    assert out["overlay_png"].endswith("P0001_1_gradcam.png") and "saliency map of" not in out["view_info"]


def test_a_model_change_explains_its_decision_among_its_own_classes(run2d, run3class):
    app = MedtlApp({"tiny2d": run2d, "three": run3class}, device="cpu")
    s = analyzed(app, sample_path("ct2d"), "three")["state"]
    assert app.target_page(s, "three") == {"__type__": "update", "choices": [EXPLAIN_DECISION, "lesion", "normal",
                                                                              "other"],
                                           "value": EXPLAIN_DECISION, "interactive": True}
    other = next(c for c in ("lesion", "normal", "other") if c != s.prediction.decision)
    app.change_target(s, other, "axial", 1, 40, 400, 0.4, "Grad-CAM", progress=quiet)
    *_, png, _ = app.change_model(s, "tiny2d", "Grad-CAM", "axial", 1, 40, 400, 0.4, progress=quiet)
    assert s.target is None and png_text(png)["class"] == s.prediction.decision and png.endswith("_gradcam.png")
    update = app.target_page(s, "tiny2d")
    assert update["choices"] == [EXPLAIN_DECISION, "0", "1"] and update["value"] == EXPLAIN_DECISION
    # a class of the model before is refused in one line naming the choices
    with pytest.raises(MedtlError) as err:
        app.change_target(s, other, "axial", 1, 40, 400, 0.4, "Grad-CAM", progress=quiet)
    assert str(err.value) == f"{other!r} is not a class of the model tiny2d; choose 'The decision' or one of ['0', '1']"
    # with no scan, or a scan the model refused, there is nothing to explain: the choice is not offered
    assert app.target_page(None, "three")["interactive"] is False


def test_the_saliency_nifti_is_the_chosen_class_and_names_it_through_the_api(client, run3d, tmp_path):
    """A 3D upload: ``/change_target`` (positional inputs as ``/change_method``'s, the class first) gives the map
    of the class asked for, voxel for voxel, in a NIfTI whose name says so. (The default method: the tiny 3D
    model's 1-voxel feature grid leaves Grad-CAM flat for both classes.)"""
    gradio_client = requires("gradio_client")
    nii, method = sample_path("ct3d"), METHODS[DEFAULT_METHOD_LABEL]
    out = dict(zip(ANALYZE_OUTPUTS, client.predict([gradio_client.handle_file(str(nii))], "tiny3d",
                                                    DEFAULT_METHOD_LABEL, 0.4, api_name="/analyze")))
    decision = out["decision"].split("\n")[0].removeprefix("## Decision: ")
    other = "1" if decision == "0" else "0"
    image, png, nifti = client.predict(other, "axial", 16, 40, 400, 0.4, DEFAULT_METHOD_LABEL,
                                       api_name="/change_target")
    assert nifti["value"].endswith(f"P0031_{method}_class-{other}_saliency.nii.gz")
    assert png.endswith(f"P0031_{method}_class-{other}_axial016.png") and png_text(png)["class"] == other
    data = np.asarray(nib.load(nifti["value"]).dataobj)
    expected = expected_map(run3d, nii, method, other)
    np.testing.assert_array_equal(data, expected.reshape(data.shape).astype(data.dtype))
    assert not np.array_equal(data, np.asarray(nib.load(out["saliency_nifti"]["value"]).dataobj))
    AppError = gradio_client.exceptions.AppError
    with pytest.raises(AppError, match=r"^'grade 3' is not a class of the model tiny3d; choose 'The decision'"):
        client.predict("grade 3", "axial", 16, 40, 400, 0.4, DEFAULT_METHOD_LABEL, api_name="/change_target")



def test_every_page_event_that_loads_a_scan_or_model_sets_the_choice_back_to_the_decision(run2d):
    """Upload, series pick, clear, model change, a built-in example and opening a series from the PACS each put a
    new session (or model) in the page: each is followed by the reset of "Class the map explains"."""
    from medtl.app.app import build_app
    from medtl.pacs import PacsConfig

    demo = build_app({"tiny2d": run2d}, device="cpu", pacs_config=PacsConfig(url="http://127.0.0.1:9/dicom-web"))
    deps = demo.config["dependencies"]
    state = next(i for i, b in demo.blocks.items() if type(b).__name__ == "State" and b.delete_callback)
    api_buttons = {i for i, b in demo.blocks.items() if type(b).__name__ == "Button" and not b.visible}
    # the page's own events that write the session, not the class or method changes (which keep the choice)
    loads = {d["id"]: d["api_name"] for d in deps if state in d["outputs"] and d["trigger_after"] is None
             and not any(t in api_buttons for t, _ in d["targets"])
             and d["api_name"] not in ("change_method", "change_target")}
    reset = {d["trigger_after"] for d in deps if d["api_name"].startswith("target_page")}
    assert sorted(loads.values()) == ["analyze_page", "change_model_page", "lambda", "open_page", "partial",
                                      "upload_page"]
    assert {i: n for i, n in loads.items() if i not in reset} == {}
