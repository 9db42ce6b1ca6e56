"""Accessibility of the app's own parts (WCAG 2.2 AA) in a real headless Chromium: text contrast of medtl's
theme and CSS, keyboard operation, names of the images, headings and the messages read out by screen readers.
Gradio's internals (its upload button, icon buttons) are not medtl's to fix and are not checked here."""

from __future__ import annotations

import pytest

from medtl.demo.cohort import sample_path

pytestmark = pytest.mark.browser

#: Reads an element's text colour and the colour behind it (the first ancestor with an opaque background).
_COLOURS_JS = """(el) => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  let bg = el;
  while (bg && rgb(getComputedStyle(bg).backgroundColor)[3] === 0) bg = bg.parentElement;
  return [rgb(getComputedStyle(el).color), bg ? rgb(getComputedStyle(bg).backgroundColor) : [255, 255, 255]];
}"""


def contrast(fg: list[float], bg: list[float]) -> float:
    """WCAG 2.x contrast ratio of two sRGB colours (0-255; an alpha channel is ignored)."""
    def luminance(c: list[float]) -> float:
        lin = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in (x / 255.0 for x in c[:3])]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_helper_matches_the_wcag_examples():
    assert contrast([0, 0, 0], [255, 255, 255]) == pytest.approx(21.0)
    assert contrast([0x3B, 0x82, 0xF6], [0xDB, 0xEA, 0xFE]) == pytest.approx(3.01, abs=0.01)  # Soft's labels
    assert contrast([0x1D, 0x4E, 0xD8], [0xDB, 0xEA, 0xFE]) == pytest.approx(5.49, abs=0.01)


def _open(browser, served, scheme: str = "light", width: int = 1440, height: int = 1000, choosers: list | None = None):
    """A page of the served app; file choosers it opens are appended to ``choosers`` (listened for before the
    page loads: Playwright intercepts choosers only once a listener is set, and a key pressed just after
    ``expect_file_chooser`` could open one before that)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=scheme)
    if choosers is not None:
        page.on("filechooser", lambda chooser: choosers.append(chooser))
    page.goto(served)
    expect(page.get_by_text("not a diagnosis")).to_be_visible()
    return page


def _predict_3d(page) -> None:
    from playwright.sync_api import expect

    page.locator("#medtl-model input").click()
    page.get_by_role("option", name="tiny3d").click()
    page.locator("#medtl-upload input[type=file]").set_input_files(str(sample_path("ct3d")))
    expect(page.locator("#medtl-decision")).to_contain_text("Decision:", timeout=120_000)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_of_the_theme_and_medtl_css_has_aa_contrast(browser, served, scheme):
    """Labels, softer text, the selected radio, the file link and medtl's own lines reach 4.5:1 (all of them
    are normal-size text) in the light and the dark theme."""
    page = _open(browser, served, scheme)
    _predict_3d(page)
    texts = {
        "block label": "#medtl-model [data-testid=block-info]",
        "panel label": "#medtl-upload [data-testid=block-label]",
        "header line": "#medtl-header p",
        "info line": ".info-text",
        "selected radio": "label.selected span",
        "slider bound": "[data-testid=max-value]",
        "file link": "#medtl-upload a",
        "view info": "#medtl-vi",
        "disclaimer": "#medtl-disclaimer p",
        "decision": "#medtl-decision p",
    }
    low = {}
    for name, selector in texts.items():
        fg, bg = page.locator(selector).first.evaluate(_COLOURS_JS)
        ratio = contrast(fg, bg)
        if ratio < 4.5:
            low[name] = (round(ratio, 2), fg, bg)
    page.close()
    assert low == {}


def test_the_pictures_say_what_they_show_and_the_results_are_headed_and_read_out(browser, served, tmp_path):
    """The viewer's picture is named and described by the line under it (plane, slice, orientation in words;
    the letters drawn on it are hidden from screen readers); the colour scale says what high means and is no
    tab stop; headings do not skip a level; the decision is a status, a failure an alert."""
    from playwright.sync_api import expect

    from medtl.app.app import COLOUR_BAR_ALT, VIEWER_ALT

    page = _open(browser, served)
    _predict_3d(page)
    viewer = page.get_by_role("button", name=VIEWER_ALT, exact=True)
    expect(viewer).to_have_count(1)
    expect(page.locator("#medtl-viewer img")).to_have_attribute("aria-describedby", "medtl-vi")
    expect(page.locator("#medtl-vi")).to_have_text("Axial slice 16 of 32 · position I 2.5 mm · scale bar 50 mm · "
                                                   "orientation: A at the top, P at the bottom, R on the left, "
                                                   "L on the right")
    expect(page.locator("#medtl-ori-layer")).to_have_attribute("aria-hidden", "true")
    assert "not shown" in COLOUR_BAR_ALT or "without colour" in COLOUR_BAR_ALT
    expect(page.get_by_role("img", name=COLOUR_BAR_ALT, exact=True)).to_be_visible()
    expect(page.locator("#medtl-colourbar button, #medtl-colourbar [tabindex]")).to_have_count(0)
    levels = page.locator("h1, h2, h3, h4, h5, h6").evaluate_all("hs => hs.map(h => +h.tagName[1])")
    assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:])), levels
    expect(page.get_by_role("heading", level=2, name="Decision: ")).to_be_visible()
    status = page.get_by_role("status").filter(has_text="Decision:")
    expect(status).to_contain_text("threshold")
    expect(status).to_have_attribute("aria-atomic", "true")

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.locator("#medtl-upload button[aria-label='Clear']").first.click()
    page.locator("#medtl-upload input[type=file]").set_input_files(str(bad))
    expect(page.get_by_role("alert").filter(has_text="notes.txt: not a DICOM")).to_be_visible(timeout=60_000)
    page.close()


def test_the_out_of_distribution_banner_is_an_alert(browser, served, tmp_path):
    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(noise)
    page = _open(browser, served)
    page.locator("#medtl-upload input[type=file]").set_input_files(str(noise))
    expect(page.get_by_role("alert").filter(has_text="Outside what this model was trained on")).to_be_visible(
        timeout=120_000)
    page.close()


_FOCUSED_JS = """() => {
  const e = document.activeElement, box = (e.closest('label') || e).getBoundingClientRect();
  return {tag: e.tagName, name: e.getAttribute('aria-label') || e.innerText || e.value || '',
          box: [box.x, box.y, box.width, box.height]};
}"""


def test_every_tab_stop_shows_where_the_focus_is(browser, served):
    """WCAG 2.4.7: Tab through the page with a result on it; each control looks different focused and not
    (its box, or its radio's label, 6 px around). Gradio drew nothing on a focused slider or selected radio."""
    import io

    from PIL import Image, ImageChops

    page = _open(browser, served)
    _predict_3d(page)
    page.mouse.move(0, 0)
    page.locator("h1").click()
    unseen, stops = [], 0
    while stops < 80:
        page.keyboard.press("Tab")
        stop = page.evaluate(_FOCUSED_JS)
        if stop["tag"] == "BODY":
            break
        stops += 1
        x, y, w, h = stop["box"]
        clip = {"x": max(0.0, x - 6), "y": max(0.0, y - 6), "width": w + 12, "height": h + 12}
        page.wait_for_timeout(100)  # let transitions settle
        focused = page.screenshot(clip=clip)
        page.evaluate("window.__medtlFocus = document.activeElement; document.activeElement.blur()")
        page.wait_for_timeout(100)
        plain = page.screenshot(clip=clip)
        page.evaluate("window.__medtlFocus.focus({focusVisible: true})")
        diff = ImageChops.difference(*(Image.open(io.BytesIO(b)).convert("RGB") for b in (focused, plain)))
        if diff.getbbox() is None:
            unseen.append(f"{stop['tag']} {stop['name'][:40]!r}")
    page.close()
    assert stops > 20  # the whole page was walked: model, upload, method, opacity, viewer, plane, slice, window ...
    assert unseen == []


def test_keyboard_alone_uploads_pages_through_slices_changes_the_view_and_downloads(browser, served):
    """No mouse: pick the model, open the file chooser, step slices on the focused picture and on the slider,
    change plane, window and method, and download both results."""
    from playwright.sync_api import expect

    from medtl.app.app import VIEWER_ALT

    choosers: list = []
    page = _open(browser, served, choosers=choosers)
    kb = page.keyboard
    page.locator("#medtl-model input").focus()  # Gradio's dropdown opens on focus; arrows and Enter pick
    kb.press("ArrowDown")
    kb.press("Enter")
    expect(page.locator("#medtl-model input")).to_have_value("tiny3d")
    expect(page.get_by_text("tiny3d", exact=True).first).to_be_visible(timeout=60_000)  # its card: the change ran
    drop_zone = page.get_by_role("button", name="Click to upload or drop files")
    drop_zone.focus()
    expect(drop_zone).to_be_focused()
    kb.press("Enter")
    for _ in range(300):
        if choosers:
            break
        page.wait_for_timeout(100)
    assert len(choosers) == 1
    choosers[0].set_files(str(sample_path("ct3d")))
    expect(page.get_by_role("status").filter(has_text="Decision:")).to_contain_text("Model: tiny3d", timeout=120_000)

    info, number = page.locator("#medtl-viewinfo"), page.locator("#medtl-slice input[type=number]")
    page.get_by_role("button", name=VIEWER_ALT, exact=True).focus()
    kb.press("ArrowDown")
    expect(number).to_have_value("17", timeout=10_000)
    kb.press("PageUp")
    expect(info).to_contain_text("Axial slice 7 of 32", timeout=10_000)
    page.get_by_role("slider", name="range slider for Slice (axial, 1-32)").focus()
    kb.press("ArrowRight")
    expect(info).to_contain_text("Axial slice 8 of 32", timeout=10_000)
    kb.press("End")
    expect(info).to_contain_text("Axial slice 32 of 32", timeout=10_000)

    page.get_by_role("radio", name="coronal").focus()
    kb.press("Space")
    expect(info).to_contain_text("Coronal slice 32 of 64", timeout=10_000)
    page.get_by_role("combobox", name="Window preset").focus()
    kb.press("ArrowDown")  # Soft tissue -> Lung
    kb.press("Enter")
    expect(page.get_by_role("spinbutton", name="number input for Level (center)")).to_have_value("-600",
                                                                                                 timeout=10_000)
    picture = page.locator("#medtl-viewer img")
    before = picture.get_attribute("src")
    page.get_by_role("radio", name="Grad-CAM", exact=True).focus()
    kb.press("Space")
    expect(page.get_by_role("radio", name="Grad-CAM", exact=True)).to_be_checked()
    expect(picture).not_to_have_attribute("src", before, timeout=60_000)  # redrawn with the new map and download
    names = []
    for button in ("Overlay PNG", "Saliency NIfTI"):
        page.get_by_role("button", name=button).focus()
        with page.expect_download(timeout=60_000) as download:
            kb.press("Enter")
        names.append(download.value.suggested_filename)
    assert names == ["P0031_gradcam_coronal032.png", "P0031_gradcam_saliency.nii.gz"]
    page.close()


def test_keyboard_alone_chooses_the_class_the_map_explains_and_a_model_change_resets_it(browser, served):
    """Tab from the last saliency method reaches "Class the map explains"; arrows and Enter pick the class not decided,
    which redraws the map (other pixels) and says so under the picture; choosing another model sets it back to
    the decision (and, the scan refused, offers nothing to choose)."""
    import io

    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect

    from medtl.app.app import METHODS

    page = _open(browser, served)
    page.locator("#medtl-upload input[type=file]").set_input_files(str(sample_path("ct2d")))  # tiny2d, selected
    status = page.get_by_role("status").filter(has_text="Decision:")
    expect(status).to_contain_text("Model: tiny2d", timeout=120_000)
    decision = status.inner_text().split("Decision:")[1].split()[0]
    other = "1" if decision == "0" else "0"
    picture = page.locator("#medtl-viewer img")

    def pixels() -> np.ndarray:
        body = page.request.get(picture.get_attribute("src")).body()
        return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))

    before, src = pixels(), picture.get_attribute("src")
    kb = page.keyboard
    page.get_by_role("radio", name=list(METHODS)[-1], exact=True).focus()  # the method radios are tab stops each
    kb.press("Tab")
    target = page.get_by_role("combobox", name="Class the map explains")
    expect(target).to_be_focused()
    expect(target).to_have_value("The decision")
    for _ in range(1 if other == "0" else 2):  # the choices: the decision, 0, 1
        kb.press("ArrowDown")
    kb.press("Enter")
    expect(target).to_have_value(other)
    expect(page.locator("#medtl-vi")).to_contain_text(f"saliency map of {other} (p = ", timeout=60_000)
    expect(picture).not_to_have_attribute("src", src, timeout=60_000)
    assert not np.array_equal(pixels(), before)

    page.locator("#medtl-model input").focus()
    kb.press("ArrowDown")
    kb.press("Enter")
    expect(page.locator("#medtl-model input")).to_have_value("tiny3d")
    expect(page.locator("#medtl-error")).to_contain_text("expects a 3D volume", timeout=60_000)
    expect(target).to_have_value("The decision", timeout=10_000)
    expect(target).to_be_disabled()
    expect(page.locator("#medtl-vi")).not_to_contain_text("saliency map of")
    page.close()
