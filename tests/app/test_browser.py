"""End to end in a real headless Chromium (Debian's, driven by Playwright): pick the 3D model,
upload a NIfTI volume, wait for the prediction, move the slice slider, take a screenshot."""

import pytest

from medtl.demo.cohort import sample_path

pytestmark = pytest.mark.browser


def test_upload_predict_slide_and_screenshot(browser, served, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(served)
    expect(page.get_by_text("not a diagnosis")).to_be_visible()
    page.locator("#medtl-model input").click()
    page.get_by_role("option", name="tiny3d").click()
    page.locator("#medtl-upload input[type=file]").set_input_files(str(sample_path("ct3d")))

    decision = page.locator("#medtl-decision")
    expect(decision).to_contain_text("Decision:", timeout=120_000)
    expect(decision).to_contain_text("threshold")
    expect(page.locator("#medtl-probs")).to_contain_text("%")
    expect(page.get_by_text("64 × 64 × 32")).to_be_visible()
    expect(page.get_by_text("not for diagnosis without review")).to_be_visible()  # model card
    expect(page.get_by_text("Slice (axial, 1-32)")).to_be_visible()

    viewer = page.locator("#medtl-viewer img")
    before = viewer.get_attribute("src")
    page.locator("#medtl-slice input[type=range]").fill("5")
    expect(viewer).not_to_have_attribute("src", before, timeout=60_000)  # the slice (and overlay) redrawn
    expect(page.locator("#medtl-slice input[type=number]")).to_have_value("5")

    # an error shows as a readable message in the page: the 2D example given to the 3D model
    page.get_by_role("button", name="Example: CT slice (DICOM)").click()
    expect(page.get_by_text("a single 2D image was given to a 3D model").first).to_be_visible(timeout=60_000)

    expect(page.locator("#medtl-colourbar img")).to_be_visible()  # the overlay's legend beside the viewer
    expect(page.locator("#medtl-viewer img")).to_be_visible()
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    assert "Traceback" not in page.locator("body").inner_text()
    page.close()


def _letters(page):
    return {k: page.locator(f"#medtl-ori-{k}").text_content() for k in ("top", "bottom", "left", "right")}


def test_viewer_wheel_keys_letters_readout_and_stale_results(browser, served, tmp_path):
    """Wheel and arrow keys over the image change the slice; orientation letters on the image edges;
    the readout is the voxel under the pointer; a failed upload and a refusing model clear the result;
    the card follows the model. Screenshots are kept in the test's folder."""
    from playwright.sync_api import expect

    from medtl.app import viewer as V
    from medtl.explain import display_aspect, display_slice
    from medtl.io import load_scan

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(served)
    page.locator("#medtl-model input").click()
    page.get_by_role("option", name="tiny3d").click()
    expect(page.locator("#medtl-upload")).to_be_visible()
    page.locator("#medtl-upload input[type=file]").set_input_files(str(sample_path("ct3d")))
    expect(page.locator("#medtl-decision")).to_contain_text("Model: tiny3d", timeout=120_000)
    expect(page.locator("#medtl-viewinfo")).to_contain_text("Axial slice 16 of 32")
    # a RAS NIfTI shown radiologically: anterior up, the patient's left on the image's right
    expect(page.locator("#medtl-ori-right")).to_have_text("L", timeout=10_000)
    assert _letters(page) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    expect(page.locator("#medtl-ori-bar")).to_have_text("50 mm")
    slice_no = page.locator("#medtl-slice input[type=number]")

    img = page.locator("#medtl-viewer img")
    box = img.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    expect(slice_no).to_have_value("17", timeout=10_000)
    expect(page.locator("#medtl-viewinfo")).to_contain_text("Axial slice 17 of 32", timeout=10_000)
    page.mouse.wheel(0, -120)
    page.mouse.wheel(0, -120)
    expect(slice_no).to_have_value("15", timeout=10_000)
    page.keyboard.press("ArrowDown")
    expect(slice_no).to_have_value("16", timeout=10_000)
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    expect(slice_no).to_have_value("14", timeout=10_000)
    expect(page.locator("#medtl-viewinfo")).to_contain_text("Axial slice 14 of 32", timeout=10_000)

    # the readout under the pointer is the voxel's value (compare with the scan read here)
    disp = V.for_display(load_scan(sample_path("ct3d")))
    picture = display_slice(disp.array, 13, "axial")
    size = V.display_size(picture.shape[:2], display_aspect(disp, "axial"))
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.55)
    readout = page.locator("#medtl-readout")
    expect(readout).to_contain_text(", 13)", timeout=10_000)  # a voxel of the slice shown (index 13)
    import re

    found = re.search(r"Pointer: (-?\d+) HU at voxel \((\d+), (\d+), (\d+)\)", readout.inner_text())
    value, voxel = int(found.group(1)), tuple(int(v) for v in found.groups()[1:])
    assert voxel[2] == 13 and value == round(float(disp.array[voxel]))
    page.screenshot(path=str(tmp_path / "viewer_axial.png"), full_page=True)

    # switch to the 2D model: it refuses the volume -> decision and probabilities cleared, card follows
    page.locator("#medtl-model input").click()
    page.get_by_role("option", name="tiny2d").click()
    expect(page.locator("#medtl-error")).to_contain_text("expects a single 2D slice", timeout=60_000)
    expect(page.locator("#medtl-decision")).not_to_contain_text("Decision")
    expect(page.get_by_text("tiny2d", exact=True).first).to_be_visible()
    assert "**tiny3d**" not in page.locator("body").inner_text()
    page.screenshot(path=str(tmp_path / "model_refused.png"), full_page=True)

    # a 2D upload with the 2D model, then a failed upload: nothing of the earlier result stays
    page.locator("#medtl-upload input[type=file]").set_input_files(str(sample_path("ct2d")))
    expect(page.locator("#medtl-decision")).to_contain_text("Model: tiny2d", timeout=120_000)
    expect(page.locator("#medtl-error")).to_have_text("")
    expect(page.locator("#medtl-study")).to_contain_text("Patient:")
    page.locator("#medtl-upload button[aria-label='Clear']").first.click()
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.locator("#medtl-upload input[type=file]").set_input_files(str(bad))
    expect(page.locator("#medtl-error")).to_contain_text("notes.txt: not a DICOM", timeout=60_000)
    expect(page.locator("#medtl-decision")).to_have_text("")
    expect(page.locator("#medtl-study")).to_have_text("")
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "failed_upload.png"), full_page=True)
    assert "Traceback" not in page.locator("body").inner_text()
    page.close()


def test_out_of_distribution_banner_is_shown_above_the_probability(browser, served, tmp_path):
    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect

    noise = tmp_path / "noise.png"  # nothing like the CT slices the 2D model learnt from
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(noise)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(served)
    page.locator("#medtl-model input").click()
    page.get_by_role("option", name="tiny2d").click()
    page.locator("#medtl-upload input[type=file]").set_input_files(str(noise))
    banner = page.locator("#medtl-banner")
    expect(banner).to_contain_text("Outside what this model was trained on: the probability is not meaningful",
                                   timeout=120_000)
    box_banner, box_probs = banner.bounding_box(), page.locator("#medtl-probs").bounding_box()
    assert box_banner["y"] < box_probs["y"]  # above the probability
    page.screenshot(path=str(tmp_path / "ood_banner.png"), full_page=True)
    page.close()


def test_orientation_letters_of_an_axial_lps_dicom_series(browser, served, tmp_path):
    from playwright.sync_api import expect

    from medtl.demo.cohort import sample_path

    files = sorted(str(p) for p in sample_path("series").glob("*.dcm"))  # LPS voxel axes, one file a slice
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(served)
    page.locator("#medtl-model input").click()
    page.get_by_role("option", name="tiny3d").click()
    page.locator("#medtl-upload input[type=file]").set_input_files(files)
    expect(page.locator("#medtl-decision")).to_contain_text("Model: tiny3d", timeout=120_000)
    expect(page.locator("#medtl-ori-right")).to_have_text("L", timeout=10_000)
    # radiological axial view, as for the RAS NIfTI: anterior up, the patient's left on the image's right
    assert _letters(page) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    page.screenshot(path=str(tmp_path / "series_axial.png"), full_page=True)
    page.close()


def _sessions(demo):
    """``{session hash: Session}`` of the sessions the served app holds a scan for."""
    from medtl.app.app import Session

    return {h: v for h, st in demo.state_holder.session_data.items() for v in st.state_data.values()
            if isinstance(v, Session)}


def test_a_closed_tab_frees_its_scan_after_the_grace_and_a_page_in_use_keeps_it(browser, run2d):
    """Gradio keeps a closed tab's state an hour; the app frees it (scan, maps, files) after its grace,
    and never the session of a page that is still open."""
    import time

    from playwright.sync_api import expect

    from medtl.app.app import build_app, launch

    demo = build_app({"tiny2d": str(run2d)}, device="cpu", closed_session_grace_s=1.0)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        pages = [browser.new_page(), browser.new_page()]
        for page in pages:
            page.goto(url)
            page.locator("#medtl-upload input[type=file]").set_input_files(str(sample_path("ct2d")))
            expect(page.locator("#medtl-decision")).to_contain_text("Decision:", timeout=120_000)
        held = _sessions(demo)
        assert len(held) == 2 and all(s.outdir.is_dir() for s in held.values())
        pages[0].close()
        deadline = time.monotonic() + 60
        while len(_sessions(demo)) == 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _sessions(demo)
        assert len(left) == 1, "the closed tab's session was not freed"
        gone = [s for h, s in held.items() if h not in left]
        assert len(gone) == 1 and not gone[0].outdir.exists()  # its pictures and downloads removed too
        time.sleep(2.0)  # past the grace: the open page's session stays and still answers
        assert _sessions(demo) == left
        pages[1].get_by_role("button", name="Example: CT slice (DICOM)").click()
        expect(pages[1].locator("#medtl-decision")).to_contain_text("Decision:", timeout=60_000)
        pages[1].close()
    finally:
        demo.close()


def test_the_decision_sits_beside_the_viewer_in_a_laptop_window(browser, served):
    """Below 1,280 px (a half-screen or zoomed browser) Gradio's page is 960 px wide, less than the three columns'
    minimum widths: the probabilities and the decision wrapped under the whole viewer column, about 1,660 px down."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(served)
    page.locator("#medtl-upload input[type=file]").set_input_files(str(sample_path("ct2d")))
    expect(page.locator("#medtl-decision")).to_contain_text("Decision:", timeout=120_000)
    for width in (1280, 1100, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(300)  # the columns settle
        boxes = {k: page.locator(f"#medtl-{k}").bounding_box() for k in ("controls", "viewcol", "results", "decision")}
        assert boxes["controls"]["x"] < boxes["viewcol"]["x"] < boxes["results"]["x"], width  # three columns
        assert boxes["results"]["y"] == pytest.approx(boxes["viewcol"]["y"], abs=2), width
        assert boxes["decision"]["y"] + boxes["decision"]["height"] < 900, width  # in the first screen
    page.close()
