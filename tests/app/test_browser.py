"""End to end in a real headless Chromium (Debian's, driven by Playwright): pick the 3D model,
upload a NIfTI volume, wait for the prediction, move the slice slider, take a screenshot."""

import pytest

from medtl.demo.cohort import sample_path

from .conftest import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python (pip install playwright)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium: install Debian's package (apt-get install chromium); .ci/run does when it can")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


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
