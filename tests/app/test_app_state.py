"""Page state through the served app (``gradio_client`` on the page's own endpoints): a failed upload
or a model that refuses the scan clears the previous result and says why in plain words; the card,
threshold and decision always belong to the selected model; the pointer readout is the voxel's value;
the study header is shown, never logged or written."""

import logging
from pathlib import Path

import numpy as np
import pytest

from tests._requires import requires
from PIL import Image

from medtl.app import viewer as V
from medtl.app.app import ANALYZE_OUTPUTS
from medtl.app.study import study_header
from medtl.demo.cohort import sample_path
from medtl.explain import display_aspect, display_slice
from medtl.infer import Predictor
from medtl.io import load_scan

gradio_client = requires("gradio_client")

MODEL_OUTPUTS = ("banner", "probabilities", "decision", "card", "overlay", "overlay_png", "saliency_nifti", "error",
                 "facts", "view_info")


def upload(client, path, model):
    out = client.predict([gradio_client.handle_file(str(path))], model, "Grad-CAM", 0.4, api_name="/upload_page")
    return dict(zip(ANALYZE_OUTPUTS, out))


def switch(client, model, plane="axial", slice_no=1, level=40, width=400):
    out = client.predict(model, "Grad-CAM", plane, slice_no, level, width, 0.4, api_name="/change_model_page")
    return dict(zip(MODEL_OUTPUTS, out))


def test_failed_upload_clears_the_previous_result_and_says_why(client, tmp_path):
    first = upload(client, sample_path("ct2d"), "tiny2d")
    assert "Decision:" in first["decision"] and first["error"] == "" and first["overlay"]
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    out = upload(client, bad, "tiny2d")
    assert out["error"].startswith("⚠ Could not read the scan: notes.txt: not a DICOM")
    assert out["decision"] == "" and out["facts"] == "" and out["banner"] == "" and out["study"] == ""
    assert not out["probabilities"] and out["overlay"] is None and out["overlay_png"] is None  # an empty Label
    assert "/tmp" not in out["error"] and "Traceback" not in out["error"]
    # the next good upload clears the message
    again = upload(client, sample_path("ct2d"), "tiny2d")
    assert again["error"] == "" and "Decision:" in again["decision"]


def test_wrong_dimensions_are_explained_for_clinicians(client):
    out = upload(client, sample_path("ct2d"), "tiny3d")
    assert "The model tiny3d expects a 3D volume; this file is a single slice" in out["error"]
    assert "preprocess.spatial_dims" not in out["error"] and out["decision"] == "" and not out["probabilities"]
    assert out["overlay"] and "| Modality | CT |" in out["facts"]  # the scan it refused is still shown, plainly
    out = upload(client, sample_path("ct3d"), "tiny2d")
    assert "expects a single 2D slice; this file is a volume of 32 slices" in out["error"]


def test_model_switch_clears_or_recomputes_and_the_card_follows(client, run2d, run3d):
    first = upload(client, sample_path("ct2d"), "tiny2d")
    # the threshold as the page writes it: more digits where p and it would read alike (0.450 against 0.450)
    t2 = Predictor.from_run(run2d, device="cpu").predict(sample_path("ct2d")).threshold_texts()[1]
    assert first["card"].startswith("**tiny2d**") and f"threshold {t2}" in first["decision"]
    refused = switch(client, "tiny3d")
    assert refused["card"].startswith("**tiny3d**")  # the card follows even when the model refuses the scan
    assert refused["decision"] == "" and not refused["probabilities"] and refused["banner"] == ""
    assert "expects a 3D volume; this file is a single slice" in refused["error"]
    assert refused["overlay"]  # the scan stays on screen, without another model's overlay
    back = switch(client, "tiny2d")
    assert back["error"] == "" and back["card"].startswith("**tiny2d**") and f"threshold {t2}" in back["decision"]
    # a 3D upload with the 3D model: its own threshold and card, nothing of tiny2d's
    vol = upload(client, sample_path("ct3d"), "tiny3d")
    t3 = Predictor.from_run(run3d, device="cpu").predict(sample_path("ct3d")).threshold_texts()[1]
    assert vol["card"].startswith("**tiny3d**") and f"threshold {t3}" in vol["decision"]
    assert "Model: tiny3d." in vol["decision"]


def test_view_info_letters_position_and_scale_bar(client):
    out = upload(client, sample_path("ct3d"), "tiny3d")
    info = out["view_info"]
    assert 'data-top="A"' in info and 'data-bottom="P"' in info and 'data-left="R"' in info and 'data-right="L"' in info
    assert "Axial slice 16 of 32" in info and "position " in info and " mm" in info and "scale bar 50 mm" in info
    picture, info, readout = client.predict("coronal", 10, 40, 400, 0.4, "Grad-CAM", 0, api_name="/view_page")
    assert 'data-top="S"' in info and "Coronal slice 10 of 64" in info


def test_pointer_readout_is_the_voxel_value(client):
    upload(client, sample_path("ct3d"), "tiny3d")
    disp = V.for_display(load_scan(sample_path("ct3d")))
    index = 15  # slider value 16
    picture = display_slice(disp.array, index, "axial")
    size = V.display_size(picture.shape[:2], display_aspect(disp, "axial"))
    for row, col in [(100, 200), (300, 50), (192, 192)]:
        text = client.predict("axial", 16, row * 65536 + col + 1, api_name="/pointer")
        voxel = V.picture_to_voxel(disp, "axial", index, size, row, col)
        assert text == f"Pointer: {disp.array[voxel]:.0f} HU at voxel ({voxel[0]}, {voxel[1]}, {voxel[2]})"
    assert client.predict("axial", 16, 0, api_name="/pointer") == ""
    # a slice change gives the readout at the pointer's last position on the new slice
    _, _, readout = client.predict("axial", 20, 40, 400, 0.4, "Grad-CAM", 192 * 65536 + 192 + 1, api_name="/view_page")
    voxel = V.picture_to_voxel(disp, "axial", 19, size, 192, 192)
    assert voxel[2] == 19 and readout == f"Pointer: {disp.array[voxel]:.0f} HU at voxel ({voxel[0]}, {voxel[1]}, 19)"


def test_study_header_shown_but_never_logged_or_written(client, caplog, tmp_path):
    header = study_header(sample_path("ct2d"))
    with caplog.at_level(logging.DEBUG):
        out = upload(client, sample_path("ct2d"), "tiny2d")
    assert f"**Patient:** {header['Patient']}" in out["study"] and header["Study date"] in out["study"]
    assert header["Patient"] not in caplog.text
    with Image.open(out["overlay_png"]) as png:
        assert not any(header["Patient"] in str(v) for v in png.text.values())
    assert header["Patient"].encode() not in open(out["overlay_png"], "rb").read()


def test_scrolling_draws_fast_pictures_and_the_download_follows_the_slice(client):
    upload(client, sample_path("ct3d"), "tiny3d")
    picture, info, readout = client.predict("axial", 10, 40, 400, 0.4, "Grad-CAM", 0, api_name="/view_page")
    assert "Axial slice 10 of 32" in info and readout == ""
    with Image.open(picture) as img:
        assert img.format == "PNG" and (img.height, img.width) == V.display_size((64, 64), 1.0)
    png = client.predict("axial", 10, 40, 400, 0.4, "Grad-CAM", api_name="/download_page")
    assert png.endswith("_axial010.png")
    with Image.open(png) as img:
        assert img.text["model"] == "tiny3d" and img.width > 384  # the labelled picture


def test_fast_render_matches_the_reference_render():
    rng = np.random.default_rng(1)
    scan = V.for_display(load_scan(sample_path("ct3d")))
    sal = scan.with_array(rng.random(scan.shape).astype(np.float32))
    for plane in V.PLANES:
        for alpha in (0.0, 0.4, 1.0):
            a = V.render(scan, plane, 3, (40, 400), sal, alpha=alpha).astype(int)
            b = V.render_fast(scan, plane, 3, (40, 400), sal, alpha=alpha).astype(int)
            assert np.abs(a - b).max() <= 1


def test_orientation_letters_of_an_lps_dicom_series(client):
    files = sorted(p for p in sample_path("series").iterdir() if p.is_file())
    out = client.predict([gradio_client.handle_file(str(p)) for p in files], "tiny3d", "Grad-CAM", 0.4,
                         api_name="/upload_page")
    out = dict(zip(ANALYZE_OUTPUTS, out))
    assert "| Orientation | LPS |" in out["facts"]
    info = out["view_info"]  # stored LPS, shown radiologically like the RAS NIfTI
    assert all(f'data-{k}="{v}"' in info for k, v in {"top": "A", "bottom": "P", "left": "R", "right": "L"}.items())
    _, info, _ = client.predict("sagittal", 5, 40, 400, 0.4, "Grad-CAM", 0, api_name="/view_page")
    assert all(f'data-{k}="{v}"' in info for k, v in {"top": "S", "bottom": "I", "left": "A", "right": "P"}.items())
    assert "**Series:**" in out["study"]


def test_the_overlay_and_its_download_explain_the_decision_shown_not_the_most_probable_class(run2d):
    """At a threshold between the two probabilities the decision is the less probable class: the saliency map
    and the labelled download must be about that class, as ``medtl predict`` and ``medtl score`` are."""
    from medtl.app.app import MedtlApp

    app = MedtlApp({"tiny2d": run2d}, device="cpu")
    pred = app.predictor("tiny2d")
    s = app._load([str(sample_path("ct2d"))], None)
    app._predict(s, "tiny2d")
    p = s.prediction.probabilities[pred.positive_class]
    pred.threshold = p + 1e-6 if s.prediction.predicted == pred.positive_class else p - 1e-6
    app._predict(s, "tiny2d")
    assert s.prediction.decision != s.prediction.predicted
    sal = app._saliency(s, "Grad-CAM")[1]
    assert sal.metadata["saliency_class"] == s.prediction.decision
    with Image.open(app._download(s, "axial", 1, 40, 400, 0.4, "Grad-CAM")) as png:
        assert png.text["class"] == s.prediction.decision


def test_a_failed_upload_leaves_no_window_of_the_previous_scan_on_offer(run2d):
    from medtl.app.app import MedtlApp

    out = dict(zip(ANALYZE_OUTPUTS, MedtlApp({"tiny2d": run2d}, device="cpu").cleared("bad file", "tiny2d")[1:]))
    assert out["preset"]["choices"] == [V.AUTO_WINDOW] and out["preset"]["interactive"] is False
    assert out["level"]["interactive"] is False and out["width"]["interactive"] is False
    assert out["error"] == "⚠ bad file"


def test_an_upload_during_a_reading_is_kept_and_clearing_the_box_stops_the_reading(run2d):
    """Gradio's default drops an upload event while one is pending: the page then showed the earlier file."""
    from medtl.app.app import build_app

    deps = build_app({"tiny2d": run2d}, device="cpu").config["dependencies"]
    upload = [d for d in deps if any(event == "upload" for _, event in d["targets"])]
    assert len(upload) == 1 and upload[0]["trigger_mode"] == "always_last"
    assert any(upload[0]["id"] in d["cancels"] for d in deps if any(event == "clear" for _, event in d["targets"]))


def test_a_scan_of_another_kind_is_refused_with_what_a_clinician_can_do(run2d):
    """The page told a clinician to pass --allow-other-domain, a command-line flag it has no place for."""
    from pydicom.data import get_testdata_file

    from medtl.app.app import MedtlApp

    out = dict(zip(ANALYZE_OUTPUTS, MedtlApp({"tiny2d": run2d}, device="cpu").analyze(
        None, [get_testdata_file("MR_small.dcm")], None, "tiny2d", "Grad-CAM", 0.4,
        progress=lambda *a, **k: None, show_refusal=True)[1:]))
    assert "model trained on CT, this is MR" in out["error"] and "choose a model trained for this kind" in out["error"]
    assert "allow" not in out["error"] and out["decision"] == ""


def test_a_blank_image_is_refused_in_the_page_as_a_file_to_check_not_a_model_to_change(run2d, tmp_path):
    from medtl.app.app import MedtlApp

    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(blank)
    out = dict(zip(ANALYZE_OUTPUTS, MedtlApp({"tiny2d": run2d}, device="cpu").analyze(
        None, [str(blank)], None, "tiny2d", "Grad-CAM", 0.4, progress=lambda *a, **k: None, show_refusal=True)[1:]))
    assert "blank.png: every voxel has the same value (a blank image)" in out["error"]
    assert "check the file: it holds no picture" in out["error"] and "choose a model" not in out["error"]
    assert "allow" not in out["error"] and out["decision"] == ""


def test_a_session_used_again_after_its_tab_closed_is_kept_and_an_unused_one_freed(run2d, tmp_path):
    """A dropped connection that comes back (an event after the close) keeps its session; a closed one
    is freed with its files. The unload handler is called as Gradio calls it when a tab's heartbeat ends."""
    import datetime
    import time
    from types import SimpleNamespace

    from gradio.state_holder import StateHolder

    from medtl.app.app import Session, build_app

    demo = build_app({"tiny2d": str(run2d)}, device="cpu", closed_session_grace_s=0.5)
    StateHolder().set_blocks(demo)
    state_id = next(i for i, b in demo.blocks.items() if type(b).__name__ == "State" and b.delete_callback)
    unload = next(d.fn for d in demo.fns.values() if any(t[1] == "unload" for t in d.targets))
    scan = load_scan(sample_path("ct2d"))
    sessions = {}
    for h in ("closed", "back"):
        (tmp_path / h).mkdir()
        sessions[h] = Session(scan=scan, display=scan, name="x.dcm", is_ct=True, outdir=tmp_path / h)
        demo.state_holder[h][state_id] = sessions[h]
        unload(SimpleNamespace(session_hash=h))
    time.sleep(0.1)
    demo.state_holder["back"]  # the page's next event, dated past the unload event's own touch
    demo.state_holder.time_last_used["back"] += datetime.timedelta(seconds=3)
    time.sleep(1.0)
    assert state_id not in demo.state_holder["closed"].state_data and not (tmp_path / "closed").exists()
    assert demo.state_holder["back"].state_data[state_id] is sessions["back"] and (tmp_path / "back").is_dir()


def test_a_full_server_disk_is_said_in_the_page_and_logged_without_the_file_name(caplog):
    import errno

    import gradio as gr

    from medtl.app.app import _friendly, _page_message

    exc = OSError(errno.ENOSPC, "No space left on device", "/srv/medtl/out-1/DOE_JANE_gradcam.png")

    @_friendly("draw the slice")
    def draw():
        raise exc

    with caplog.at_level(logging.INFO), pytest.raises(gr.Error) as info:
        draw()
    said = ("the server could not write a file (No space left on device); ask its administrator to free disk "
            "space")
    assert info.value.message == said
    assert _page_message(exc, "run the model") == f"Could not run the model: {said}."
    assert "No space left on device" in caplog.text and "DOE_JANE" not in caplog.text


def test_scrolling_keeps_a_few_pictures_on_the_server_not_one_per_slice(client):
    """Each slice drawn was a new PNG that Gradio copied into its cache, where it stayed an hour or two
    (``delete_cache``) while the app removed only its own copy: scrolling a CT piled up one file per slice.
    Now the pictures are written where Gradio serves them without copying, and only the last few stay."""
    from gradio.utils import get_upload_folder

    cache = Path(get_upload_folder())
    before = set(cache.rglob("view-*.png"))
    upload(client, sample_path("ct3d"), "tiny3d")
    for slice_no in range(1, 15):
        picture, info, _ = client.predict("axial", slice_no, 40, 400, 0.4, "Grad-CAM", 0, api_name="/view_page")
        assert f"Axial slice {slice_no} of 32" in info
    kept = set(cache.rglob("view-*.png")) - before
    assert 0 < len(kept) <= 8
