"""The Space in a real browser (Debian's chromium, Python playwright) on colour models only, offline: 32×32 and 64×64
RGB folders written by stock diffusers. The page words the drawing tab for pictures, samples in colour, and answers
the paper's figure 7 on an uploaded photo."""

import io
import tempfile
import time

import numpy as np
import pytest
from PIL import Image
from test_app import running_app
from test_app_browser import CHROMIUM, DESKTOP, PHONE, image_src, open_page
from test_app_paper import colour_photo, write_rgb_model

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium: apt-get install -y chromium chromium-driver", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install playwright")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    models = tmp_path_factory.mktemp("rgb-models")
    write_rgb_model(models / "rgb-32", 32)
    write_rgb_model(models / "rgb-64", 64)
    with running_app(models, tmp_path_factory.mktemp("log") / "app.log", HF_HUB_OFFLINE="1") as url:
        yield url


def picture_pixels(page, label: str, timeout: float = 120) -> np.ndarray:
    """The pixels of the picture in the block labelled ``label``, once it shows one, as the page serves it."""
    deadline = time.monotonic() + timeout
    while not (src := image_src(page, label)):
        assert time.monotonic() < deadline, f"no picture under {label!r}"
        page.wait_for_timeout(250)
    data = page.evaluate("async src => Array.from(new Uint8Array(await (await fetch(src)).arrayBuffer()))", src)
    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB")).astype(int)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_colour_model_samples_in_colour_and_says_picture(app_url, viewport, tmp_path):
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser, page, errors = open_page(p, app_url, viewport, profile)
        page.get_by_role("tab", name="Your picture").wait_for(timeout=60_000)  # not "Your digit": a colour model
        assert page.get_by_role("tab", name="Your digit").count() == 0
        page.get_by_role("button", name="Sample", exact=True).click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('img')].some(i => i.src.endsWith('.gif') && i.naturalWidth > 0)",
            timeout=120_000,
        )
        page.get_by_role("tab", name="Paper figures").click()
        photo = colour_photo(tmp_path / "photo.png")
        upload = page.get_by_text("…or upload a picture", exact=True).locator("visible=true").first
        page.locator(".block", has=upload).first.locator("input[type=file]").set_input_files(str(photo))
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Run the chains").click()
        x0 = picture_pixels(page, "The picture (x₀)")
        assert np.abs(x0[..., 0] - x0[..., 2]).max() > 100  # the red and blue halves, in colour
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"] + 1, f"the page scrolls sideways ({width} px)"
        browser.close()
        assert not errors, errors
