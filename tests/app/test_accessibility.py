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


def _open(browser, served, scheme: str = "light", width: int = 1440, height: int = 1000):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=scheme)
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
