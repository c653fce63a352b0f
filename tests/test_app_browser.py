"""The Gradio app in a real browser: Debian's chromium driven by Python playwright (never ``playwright install``).

Opens the page served by ``python app.py`` (tiny random model), samples 2 images in 20 steps, waits for the denoising
GIF, checks it is shown, then opens the forward-process tab. Screenshots go to ``$DDPM_HF_SCREENSHOT_DIR`` (default:
the test's tmp folder). CI needs ``apt-get install -y chromium chromium-driver`` and ``pip install playwright``.
"""

import os
import tempfile
from pathlib import Path

import pytest
from test_app import running_app, write_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium: apt-get install -y chromium chromium-driver", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install playwright")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    write_tiny_model(models)
    with running_app(models, tmp_path_factory.mktemp("app-log") / "app.log") as url:
        yield url


@pytest.fixture
def page(app_url):
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=FLAGS, headless=True, viewport={"width": 1400, "height": 1000}
        )  # fmt: skip
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(app_url)
        yield page
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    folder = Path(os.environ.get("DDPM_HF_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(f"number input for {label}")
    box.fill(str(value))
    box.press("Enter")


def test_sample_shows_the_animation(page, screenshot_dir):
    page.get_by_role("button", name="Sample", exact=True).wait_for(timeout=60_000)
    set_number(page, "Number of images", 2)
    set_number(page, "Sampling steps", 20)
    page.get_by_role("button", name="Sample", exact=True).click()

    gif = page.locator("img[src$='.gif']:visible").first
    gif.wait_for(timeout=120_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=gif.element_handle(), timeout=30_000)
    assert gif.is_visible()
    box = gif.bounding_box()
    assert box["width"] > 200 and box["height"] > 50
    samples = page.locator("img[src$='.png']:visible")
    assert samples.count() >= 2  # the final grid and the scrubbed frame
    page.screenshot(path=screenshot_dir / "app-sample.png", full_page=True)
    assert (screenshot_dir / "app-sample.png").stat().st_size > 10_000

    frame = page.locator(".picture img[src$='.png']:visible").last  # the scrubbed frame, under the GIF's row
    last_frame = frame.get_attribute("src")
    page.get_by_label("number input for Captured step 19 of 0 … 19: x_t at t = 0").wait_for(timeout=60_000)
    set_number(page, "Captured step 19 of 0 … 19: x_t at t = 0", 0)
    page.wait_for_function(
        "src => [...document.querySelectorAll('.picture img')].every(i => i.src !== src) ||"
        " document.body.innerText.includes('Captured step 0 of')",
        arg=last_frame,
        timeout=30_000,
    )
    assert page.get_by_text("Captured step 0 of 0 … 19").is_visible()

    seed = page.get_by_label("Seed")
    page.get_by_role("button", name="Random seed").click()
    page.wait_for_function("() => document.querySelector('input[aria-label=\"Seed\"]').value !== '0'", timeout=30_000)
    assert int(seed.input_value()) >= 0

    page.get_by_role("tab", name="Forward process").click()
    forward_gif = page.locator("img[src$='.gif']:visible").first
    forward_gif.wait_for(timeout=60_000)
    assert page.get_by_label("signal rate √ᾱ_t").input_value() not in ("", "0")
    page.screenshot(path=screenshot_dir / "app-forward.png", full_page=True)
