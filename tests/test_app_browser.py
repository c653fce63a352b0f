"""The Gradio app in a real browser: Debian's chromium driven by Python playwright (never ``playwright install``).

Serves ``python app.py`` on a tiny random model and uses it as a visitor does, at desktop and phone width: the
result shown on arrival, 1-step sampling, Enter in a number box, empty and bad number boxes, a non-image upload, a
drawing through noise and back, inpainting, a second visitor waiting in the queue, a double click, Stop with nothing
running, another model. Screenshots of every tab at both widths go to ``$DDPM_HF_SCREENSHOT_DIR`` (default: a tmp
folder). CI needs ``apt-get install -y chromium chromium-driver`` and ``pip install playwright``.
"""

import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client
from PIL import Image
from test_app import CARD, MODEL, running_app, write_tiny_model

from ddpm_hf import DDPMHFScheduler, save_pipeline
from ddpm_hf.models import build_unet
from ddpm_hf.space.images import KEEP_FILES

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TABS = ["Sample", "Your digit", "Inpaint", "Forward", "Posterior", "Paper figures", "About"]
DESKTOP, PHONE = {"width": 1400, "height": 1000}, {"width": 390, "height": 844}

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium: apt-get install -y chromium chromium-driver", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install playwright")


SHORT_MODEL = "ddpm-t500"  # a second model, with T = 500 timesteps (and no card: it draws "pictures")
NOISED = "Noised to t (xₜ)"  # the label of x_t on the Your digit and Forward tabs
GRID = "Samples (while running: now | guessed end)"  # the Sample tab's result


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    write_tiny_model(models)
    save_pipeline(build_unet("tiny", 28, 1).eval(), DDPMHFScheduler(num_train_timesteps=500), models / SHORT_MODEL)
    with running_app(models, tmp_path_factory.mktemp("app-log") / "app.log") as url:
        yield url


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("DDPM_HF_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(p, url: str, viewport: dict, profile: str, dark: bool = False):
    browser = p.chromium.launch_persistent_context(
        profile,
        executable_path=str(CHROMIUM),
        args=FLAGS,
        headless=True,
        viewport=viewport,
        color_scheme="dark" if dark else "light",
    )
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    return browser, page, errors


@pytest.fixture
def page(app_url):
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser, page, errors = open_page(p, app_url, DESKTOP, profile)
        yield page
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def visible_gif(page):
    gif = page.locator("img[src$='.gif']:visible").first
    gif.wait_for(timeout=120_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=gif.element_handle(), timeout=30_000)
    return gif


def image_src(page, label: str) -> str | None:
    """The src of the image in the block labelled ``label`` (None while it is empty)."""
    return page.evaluate(
        "label => { const l = [...document.querySelectorAll('[data-testid=block-label]')]"
        ".find(e => e.textContent.trim() === label && e.offsetParent !== null);"
        " const img = l && l.closest('.block').querySelector('img'); return img ? img.getAttribute('src') : null; }",
        label,
    )


def wait_for_new_image(page, label: str, old: str | None) -> None:
    for _ in range(600):
        if image_src(page, label) not in (None, old):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"the image {label!r} did not change")


def set_number(page, label: str, value) -> None:
    slider_box = page.get_by_label(f"number input for {label}", exact=True).locator("visible=true")
    box = slider_box.or_(page.get_by_label(label, exact=True).locator("visible=true")).first
    box.fill(str(value))
    box.press("Enter")


def toast_text(page) -> str:
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=60_000)
    return toast.inner_text()


def test_a_result_is_shown_on_arrival(page, screenshot_dir):
    gif = visible_gif(page)  # no click: the start-up run of the default request
    assert gif.bounding_box()["width"] > 200
    assert page.locator(".picture img[src$='.png']:visible").count() >= 2  # the grid and one frame
    assert page.get_by_text("the result x₀, after").first.is_visible()
    page.screenshot(path=screenshot_dir / "arrival-desktop.png", full_page=True)


def open_advanced(page) -> None:
    """Show the steps and variance, folded away in an accordion."""
    steps = page.get_by_label("number input for Sampling steps", exact=True)
    if not steps.is_visible():
        page.get_by_text("Advanced: steps and variance").first.click()
    steps.wait_for(timeout=30_000)


def sample_and_wait(page) -> None:
    """Press Sample and wait for the run's GIF (a new one) to be shown."""
    old = page.locator("img[src$='.gif']:visible").first.get_attribute("src")
    page.get_by_role("button", name="Sample", exact=True).click()
    page.wait_for_function(
        "src => [...document.querySelectorAll('img')].some(i => i.src.endsWith('.gif') &&"
        " i.src !== src && i.complete && i.naturalWidth > 0)",
        arg=old,
        timeout=120_000,
    )


def test_one_sampling_step_and_the_scrubber(page):
    visible_gif(page)
    set_number(page, "Number of images", 2)
    open_advanced(page)
    set_number(page, "Sampling steps", 1)
    sample_and_wait(page)
    page.get_by_text("the result x₀, after 1 step").first.wait_for(timeout=30_000)
    assert page.locator(".toast-body").count() == 0
    assert page.get_by_text("blurred average").first.is_visible()  # one DDPM step: the status line says why
    set_number(page, "Frame", 0)
    page.get_by_text("frame 0 of 1: step 1 of 1").first.wait_for(timeout=30_000)


def test_enter_in_a_number_box_updates_the_forward_tab(page):
    page.get_by_role("tab", name="Forward").click()
    page.get_by_text("At t = 300").first.wait_for(timeout=60_000)
    before = image_src(page, NOISED)
    set_number(page, "Noise seed (ε)", 5)
    wait_for_new_image(page, NOISED, before)
    before = image_src(page, NOISED)
    set_number(page, "t", 900)
    wait_for_new_image(page, NOISED, before)
    page.get_by_text("At t = 900").first.wait_for(timeout=30_000)


def test_a_non_image_upload_gets_a_message_and_the_tab_recovers(page, tmp_path):
    page.get_by_role("tab", name="Forward").click()
    page.get_by_text("At t = 300").first.wait_for(timeout=60_000)
    upload = page.locator("input[type=file]").first
    text, fake = tmp_path / "notes.txt", tmp_path / "notes.png"
    text.write_text("not an image")
    fake.write_text("not an image either")
    upload.set_input_files(str(text))  # refused by the browser: the wrong kind of file
    assert "Only image/* allowed" in toast_text(page)
    page.locator(".toast-close").first.click()
    upload.set_input_files(str(fake))  # an image's name, not an image's content: refused by the app
    page.get_by_text("not an image this app can read").first.wait_for(timeout=60_000)
    set_number(page, "t", 100)  # the bad file is gone: the tab works on the test image
    page.get_by_text("At t = 100").first.wait_for(timeout=60_000)
    assert image_src(page, "Clean image (x₀)")


def draw(page, target, strokes) -> None:
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    for (x0, y0), (x1, y1) in strokes:
        page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(
                box["x"] + (x0 + (x1 - x0) * k / 10) * box["width"],
                box["y"] + (y0 + (y1 - y0) * k / 10) * box["height"],
            )
        page.mouse.up()


def test_a_sketch_goes_through_noise_and_back(page, screenshot_dir):
    page.get_by_role("tab", name="Your digit").click()
    canvas = page.locator("canvas:visible").first
    canvas.wait_for(timeout=30_000)
    draw(page, canvas, [((0.5, 0.2), (0.5, 0.8))])
    set_number(page, "t (how much noise)", 300)
    page.get_by_role("button", name="Noise and denoise").click()
    visible_gif(page)
    assert image_src(page, NOISED)
    page.screenshot(path=screenshot_dir / "digit-desktop.png", full_page=True)


def test_inpainting_a_test_digit(page, screenshot_dir):
    page.get_by_role("tab", name="Inpaint").click()
    page.get_by_role("button", name="Load test image").click()
    canvas = page.locator("canvas:visible").first
    canvas.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    draw(page, canvas, [((0.55, 0.1), (0.55, 0.9)), ((0.7, 0.1), (0.7, 0.9))])
    page.get_by_role("button", name="Inpaint", exact=True).click()
    visible_gif(page)
    page.screenshot(path=screenshot_dir / "inpaint-desktop.png", full_page=True)


@pytest.mark.parametrize("width", ["desktop", "phone", "phone-dark"])
def test_every_tab_is_reachable_and_captured(app_url, screenshot_dir, width):
    viewport = DESKTOP if width == "desktop" else PHONE
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser, page, errors = open_page(p, app_url, viewport, profile, dark=width.endswith("dark"))
        visible_gif(page)
        for name in TABS:
            tab = page.get_by_role("tab", name=name)
            assert tab.is_visible(), f"the tab {name!r} is folded away in a menu"  # all seven show, on a phone too
            tab.click()
            page.wait_for_timeout(1500)
            page.screenshot(path=screenshot_dir / f"tab-{name.split()[0].lower()}-{width}.png", full_page=True)
            width_px = page.evaluate("document.documentElement.scrollWidth")
            assert width_px <= viewport["width"] + 1, f"{name}: the page scrolls sideways ({width_px} px)"
        browser.close()
        assert not errors, errors


def seed_value(page) -> int:
    return int(page.get_by_label("Seed", exact=True).locator("visible=true").first.input_value())


def test_each_sample_gets_a_new_seed_shown_for_replay(page):
    visible_gif(page)
    set_number(page, "Number of images", 1)
    open_advanced(page)
    set_number(page, "Sampling steps", 1)
    seeds = []
    for _ in range(2):
        sample_and_wait(page)
        seeds.append(seed_value(page))
    assert seeds[0] != seeds[1] and 0 not in seeds, seeds
    set_number(page, "Seed", seeds[0])  # typing a seed turns the new-seed choice off: it is replayed
    sync_api.expect(page.get_by_label("New seed each run")).not_to_be_checked()


def test_progress_counts_steps_and_stop_says_where_it_stopped(page):
    visible_gif(page)
    open_advanced(page)
    set_number(page, "Sampling steps", 1000)
    page.get_by_role("button", name="Sample", exact=True).click()
    page.get_by_text("of 1000, t = ").first.wait_for(timeout=120_000)  # "step k of 1000, t = …; about … s left"
    assert page.locator("img[src$='.gif']:visible").count() == 0, "the previous run's GIF is still shown"
    page.get_by_role("button", name="Stop", exact=True).first.click()
    page.get_by_text("Stopped at step").first.wait_for(timeout=30_000)
    assert page.locator("img[src$='.gif']:visible").count() == 0


def test_after_many_requests_the_showcase_stays_and_a_lost_frame_says_so(app_url):
    """More than KEEP_FILES results rotate a run's GIF out: scrubbing it says so in a message; a new visitor still
    gets the start-up result."""
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser, page, errors = open_page(p, app_url, DESKTOP, profile)
        visible_gif(page)
        set_number(page, "Number of images", 1)
        open_advanced(page)
        set_number(page, "Sampling steps", 1)
        sample_and_wait(page)
        client = Client(app_url, verbose=False)
        for seed in range(KEEP_FILES + 2):
            client.predict(MODEL, 1, "ddpm", 1, "fixed_small", seed, api_name="/sample")
        set_number(page, "Frame", 0)
        assert "that animation is gone: run it again" in toast_text(page)
        browser.close()
        assert not errors, errors
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser, page, errors = open_page(p, app_url, DESKTOP, profile)
        visible_gif(page)
        page.get_by_text("the result x₀, after").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        assert page.locator(".toast-body").count() == 0
        browser.close()
        assert not errors, errors


CONTROLS = {"button", "checkbox", "combobox", "img", "link", "radio", "slider", "spinbutton", "tab", "textbox"}


def unnamed_controls(page) -> list[str]:
    """The controls and images Chromium's accessibility tree gives no name (what a screen reader would announce)."""
    cdp = page.context.new_cdp_session(page)
    found = []
    for node in cdp.send("Accessibility.getFullAXTree")["nodes"]:
        if node.get("ignored") or node.get("role", {}).get("value") not in CONTROLS:
            continue
        if not str(node.get("name", {}).get("value", "")).strip():
            found.append(cdp.send("DOM.getOuterHTML", {"backendNodeId": node["backendDOMNodeId"]})["outerHTML"][:200])
    return found


def test_every_control_has_a_name(page):
    """Icon buttons (download, fullscreen, clear, the editors' tools), inputs and result images are announced by a
    name, on every tab."""
    visible_gif(page)
    for name in TABS:
        page.get_by_role("tab", name=name).click()
        page.wait_for_timeout(1000)
        assert not unnamed_controls(page), f"{name}: controls without a name: {unnamed_controls(page)}"


def write_slow_model(models_dir: Path) -> None:
    """A random model whose start-up run takes seconds (wide channels), so a visitor arrives while it is being made."""
    config = models_dir / "unet.json"
    config.write_text(
        json.dumps(
            {
                "block_out_channels": [64, 128, 256],
                "layers_per_block": 2,
                "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
                "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
                "norm_num_groups": 8,
            }
        )
    )
    torch.manual_seed(0)
    folder = save_pipeline(build_unet(None, 28, 1, config).eval(), DDPMHFScheduler(), models_dir / MODEL)
    (folder / "README.md").write_text(CARD)


PANELS = """() => {
  const shown = e => e && e.offsetParent !== null;
  const grid = [...document.querySelectorAll('[data-testid=block-label]')]
    .find(l => l.textContent.trim().startsWith('Samples') && shown(l));
  const img = grid && grid.closest('.block').querySelector('img');
  const line = [...document.querySelectorAll('.prose, .md')].map(e => e.textContent).join(' ');
  return {grid: Boolean(img && img.getAttribute('src')), making: /first result/.test(line)};
}"""


def test_the_first_visitor_after_boot_never_sees_empty_panels(tmp_path):
    """From the first paint until the start-up result is there, the grid shows the chain or a line says the first
    result is being made."""
    models = tmp_path / "models"
    models.mkdir()
    write_slow_model(models)
    with running_app(models, tmp_path / "app.log") as url, sync_api.sync_playwright() as p:
        browser, page, errors = open_page(p, url, DESKTOP, str(tmp_path / "profile"))
        page.get_by_role("button", name="Sample", exact=True).wait_for(timeout=60_000)  # the page is drawn
        said_so = False
        deadline = time.monotonic() + 300
        while page.locator("img[src$='.gif']:visible").count() == 0:
            state = page.evaluate(PANELS)
            assert state["grid"] or state["making"], "empty panels and no word on the first result"
            said_so |= state["making"]
            assert time.monotonic() < deadline, "the start-up result did not come"
            page.wait_for_timeout(100)
        assert said_so, "the start-up run ended before the page showed it being made (the model is too fast)"
        browser.close()
        assert not errors, errors


def slider_end(page, label: str) -> str:
    return (
        page.get_by_label(f"range slider for {label}", exact=True).locator("visible=true").first.get_attribute("max")
    )


def test_the_t_sliders_end_at_the_models_last_timestep(page):
    visible_gif(page)
    page.get_by_role("tab", name="Forward").click()
    page.get_by_text("At t = 300").first.wait_for(timeout=60_000)
    assert slider_end(page, "t") == "999"
    page.get_by_label("Model").first.click()
    page.get_by_role("option", name=SHORT_MODEL).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('input[type=range]')].some(i => i.offsetParent && i.max === '499')",
        timeout=60_000,
    )
    assert slider_end(page, "t") == "499"
    page.get_by_role("tab", name="Your digit").click()
    assert slider_end(page, "t (how much noise)") == "499"


def a_digit_run(page):
    """A stroke drawn on the Your digit canvas, sent through noise and back; returns the canvas."""
    page.get_by_role("tab", name="Your digit").click()
    canvas = page.locator(".black-canvas canvas").first
    canvas.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    draw(page, canvas, [((0.5, 0.2), (0.5, 0.8))])
    page.get_by_role("button", name="Noise and denoise").click()
    visible_gif(page)
    return canvas


def test_a_non_image_dropped_on_the_digit_canvas_says_so_and_clears_the_old_run(page):
    """The editor itself would fail on it with only a console error (a JavaScript error fails this test too)."""
    canvas = a_digit_run(page)
    dropped = page.evaluate_handle(
        "() => { const d = new DataTransfer();"
        " d.items.add(new File(['not an image'], 'notes.png', {type: 'image/png'})); return d; }"
    )
    for event in ("dragenter", "dragover", "drop"):
        canvas.dispatch_event(event, {"dataTransfer": dropped})
    note = page.get_by_label("What was done to your picture").locator("visible=true").first
    page.wait_for_function("e => e.value.includes('not an image this app can read')", arg=note.element_handle())
    assert page.locator("img[src$='.gif']:visible").count() == 0, "the earlier run's GIF is still shown"
    assert image_src(page, "Your picture (x₀)") is None


PLOTS = """() => [...document.querySelectorAll('.vega-embed svg')].filter(s => s.getBoundingClientRect().width > 0)
  .map(s => { const box = s.getBoundingClientRect(), title = s.querySelector('.role-title-text text');
    const t = title && title.getBoundingClientRect();
    return {width: Math.round(box.width), title: title && title.textContent,
            inside: Boolean(t && t.left >= box.left - 1 && t.right <= box.right + 1),
            lines: [...s.querySelectorAll('.mark-line path')].filter(p => (p.getAttribute('d') || '').length > 20).length};
  })"""


def test_every_plot_is_readable_on_a_phone(app_url, screenshot_dir):
    """At 390 px each plot of the schedule tab is drawn wide, with its lines and its whole title."""
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser, page, errors = open_page(p, app_url, PHONE, profile)
        visible_gif(page)
        page.get_by_role("tab", name="Posterior").click()
        page.get_by_text("Bound L ≈").first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)
        plots = page.evaluate(PLOTS)
        page.screenshot(path=screenshot_dir / "plots-phone.png", full_page=True)
        assert len(plots) == 4, plots
        for plot in plots:
            assert plot["width"] >= 280 and plot["lines"] >= 1, plot
            assert plot["title"] and plot["inside"], f"the title is missing or clipped: {plot}"
        browser.close()
        assert not errors, errors


def test_a_non_image_on_the_digit_upload_box_says_so_and_clears_the_old_run(page, tmp_path):
    a_digit_run(page)
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    box = page.locator(".block", has=page.get_by_text("…or upload a picture", exact=True)).first
    box.locator("input[type=file]").set_input_files(str(fake))
    note = page.get_by_label("What was done to your picture").locator("visible=true").first
    page.wait_for_function("e => e.value.includes('not an image this app can read')", arg=note.element_handle())
    assert page.locator("img[src$='.gif']:visible").count() == 0, "the earlier run's GIF is still shown"


def test_the_header_links_the_paper_and_code_and_the_examples_and_comparison_work(page):
    visible_gif(page)
    assert page.get_by_role("link", name="Paper").get_attribute("href") == "https://arxiv.org/abs/2006.11239"
    assert "github.com" in page.get_by_role("link", name="the authors' code").get_attribute("href")
    page.locator("td:visible", has_text="DPM-Solver++ SDE: fast, stochastic").first.click()  # sampler, steps, seed 7
    page.wait_for_timeout(1000)
    assert seed_value(page) == 7 and not page.get_by_label("New seed each run").is_checked()
    assert page.get_by_text("its seed, 7, will be used again on every run").first.is_visible()  # and says so
    set_number(page, "Number of images", 1)
    page.get_by_text("Compare two samplers on the same seed").first.click()
    page.get_by_role("button", name="Run both").click()
    for label in ("DPM-Solver++: fast, deterministic, same seed", "DDIM, η = 0: deterministic, same seed"):
        wait_for_new_image(page, label, None)


def visible_error_pills(page) -> list[str]:
    """The "Error" pills Gradio draws over a component when an event fails (none should be seen)."""
    return page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=status-tracker] .error')]"
        ".filter(e => e.checkVisibility({opacityProperty: true, visibilityProperty: true})).map(e => e.textContent)"
    )


def expect_message(page, message: str) -> None:
    """``message`` in a toast, no Error pill, and the toasts closed again."""
    page.locator(".toast-body", has_text=message).first.wait_for(timeout=60_000)
    page.wait_for_timeout(300)
    assert not visible_error_pills(page), visible_error_pills(page)
    for close in page.locator(".toast-close").all():
        close.click()


def box(page, label: str):
    return page.get_by_label(label, exact=True).locator("visible=true").first


def fill_and_enter(page, label: str, value: str) -> None:
    box(page, label).fill(value)
    box(page, label).press("Enter")


def small_runs(page) -> None:
    """One image, one step: the Sample tab's runs take no time."""
    set_number(page, "Number of images", 1)
    open_advanced(page)
    set_number(page, "Sampling steps", 1)


def test_empty_and_bad_number_boxes_get_a_message_and_leave_the_panels(page):
    """On every tab: an empty seed means a new random one (shown in the box); a bad seed is answered with the app's
    message in a toast, with no Error pill and the panels as they were; a test-image index beyond the range becomes
    its end, with no message."""
    visible_gif(page)
    small_runs(page)
    seed_box = box(page, "Seed")
    seed_box.fill("")
    page.wait_for_timeout(1000)
    assert page.get_by_label("New seed each run").is_checked(), "emptying the seed turned off new seeds"
    page.get_by_label("New seed each run").uncheck()
    seed_box.fill("")
    sample_and_wait(page)
    assert seed_box.input_value().isdigit(), "an empty seed was not replaced by the seed used"
    grid = image_src(page, GRID)
    for bad, message in [
        ("-5", "Seed must be ≥ 0, got -5"),
        ("1e20", "Seed must be ≤ 2147483647, got 100000000000000000000"),
        ("1.5", "Seed must be a whole number, got 1.5"),
    ]:
        seed_box.fill(bad)
        page.get_by_role("button", name="Sample", exact=True).click()
        expect_message(page, message)
        assert image_src(page, GRID) == grid
    for tab, label, shown in [("Forward", "Noise seed (ε)", NOISED), ("Posterior", "Seed (ε and z)", "Noised xₜ")]:
        page.get_by_role("tab", name=tab).click()
        wait_for_new_image(page, shown, None)
        before = image_src(page, shown)
        fill_and_enter(page, label, "")
        wait_for_new_image(page, shown, before)  # drawn with a new seed, which the box shows
        assert box(page, label).input_value().isdigit()
        before = image_src(page, shown)
        fill_and_enter(page, label, "-5")
        expect_message(page, f"{label} must be ≥ 0, got -5")
        assert image_src(page, shown) == before
        fill_and_enter(page, label, "3")
        fill_and_enter(page, "number input for Test image (index)", "300")
        page.wait_for_timeout(1500)
        assert box(page, "number input for Test image (index)").input_value() == "255"
        assert page.locator(".toast-body").count() == 0, "a clamped index was also refused"
    page.get_by_role("tab", name="Inpaint").click()
    fill_and_enter(page, "Seed", "-5")
    page.get_by_role("button", name="Inpaint", exact=True).click()
    expect_message(page, "Seed must be ≥ 0, got -5")
    page.get_by_role("tab", name="Your digit").click()
    draw(page, page.locator(".black-canvas canvas").first, [((0.5, 0.2), (0.5, 0.8))])
    set_number(page, "Number of images", 1)
    fill_and_enter(page, "Seed", "")
    page.get_by_role("button", name="Noise and denoise").click()
    visible_gif(page)
    assert box(page, "Seed").input_value().isdigit()
    fill_and_enter(page, "Seed", "-5")
    page.get_by_role("button", name="Noise and denoise").click()
    expect_message(page, "Seed must be ≥ 0, got -5")


def test_a_visitor_waiting_for_another_run_is_told_so(app_url):
    with (
        sync_api.sync_playwright() as p,
        tempfile.TemporaryDirectory() as first,
        tempfile.TemporaryDirectory() as second,
    ):
        running, running_page, errors = open_page(p, app_url, DESKTOP, first)
        waiting, waiting_page, more_errors = open_page(p, app_url, DESKTOP, second)
        visible_gif(running_page)
        visible_gif(waiting_page)
        open_advanced(running_page)
        set_number(running_page, "Sampling steps", 1000)
        running_page.get_by_role("button", name="Sample", exact=True).click()
        running_page.get_by_text("of 1000, t = ").first.wait_for(timeout=120_000)
        waiting_page.get_by_role("button", name="Sample", exact=True).click()
        line = waiting_page.locator(".run-status .queue-line").first
        line.wait_for(timeout=60_000)
        shown = waiting_page.evaluate("e => getComputedStyle(e, '::before').content", line.element_handle())
        assert shown == '"waiting for another run (1 ahead)…"', shown
        assert line.bounding_box()["height"] > 10, "the waiting line is not to be seen"
        running_page.get_by_role("button", name="Stop", exact=True).click()
        waiting_page.get_by_text("the result x₀, after").first.wait_for(timeout=120_000)  # its turn came
        running.close()
        waiting.close()
        assert not errors + more_errors, errors + more_errors


def first_picture(page):
    """The block of the first result picture on the tab shown (the Sample tab's grid; Your digit's x_0)."""
    return page.locator(".picture:visible").first


def in_view(block) -> bool:
    """Whether ``block`` is at least half on screen."""
    return block.evaluate(
        "b => { const r = b.getBoundingClientRect();"
        " return Math.min(r.bottom, innerHeight) - Math.max(r.top, 0) > r.height / 2; }"
    )


def test_on_a_phone_the_result_is_in_view_after_run(app_url):
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser, page, errors = open_page(p, app_url, PHONE, profile)
        visible_gif(page)
        small_runs(page)
        page.mouse.wheel(0, 3000)  # scrolled down to the settings
        sample_and_wait(page)
        page.wait_for_timeout(1500)
        assert in_view(first_picture(page)), "the new samples are off screen"
        page.get_by_role("tab", name="Your digit").click()
        draw(page, page.locator(".black-canvas canvas").first, [((0.5, 0.2), (0.5, 0.8))])
        page.get_by_role("button", name="Noise and denoise").click()
        visible_gif(page)
        page.wait_for_timeout(1500)
        assert in_view(first_picture(page)), "the result is off screen"
        browser.close()
        assert not errors, errors


def canvas_brightness(page) -> float:
    """The mean grey level (0 black, 255 white) of the middle of the drawing canvas, as it is seen."""
    canvas = page.locator(".black-canvas canvas").first
    with Image.open(io.BytesIO(canvas.screenshot())) as shot:
        pixels = np.asarray(shot.convert("L"))
    height, width = pixels.shape
    return float(pixels[int(0.35 * height) : int(0.65 * height), int(0.35 * width) : int(0.65 * width)].mean())


def test_the_canvas_is_black_and_drawable_after_clear(page):
    page.get_by_role("tab", name="Your digit").click()
    canvas = page.locator(".black-canvas canvas").first
    canvas.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    draw(page, canvas, [((0.5, 0.2), (0.5, 0.8))])
    page.get_by_label("Clear canvas").first.click()
    page.wait_for_timeout(2000)
    assert canvas_brightness(page) < 5, "the cleared canvas is not black"
    draw(page, canvas, [((0.3, 0.5), (0.7, 0.5))])
    page.wait_for_timeout(500)
    assert canvas_brightness(page) > 15, "strokes on the cleared canvas cannot be seen"
    set_number(page, "Number of images", 1)
    page.get_by_role("button", name="Noise and denoise").click()
    visible_gif(page)  # the strokes were sent: no "the drawing is empty"


def shown_pixels(block) -> np.ndarray:
    """The picture shown in ``block``, as grey levels."""
    src = block.locator("img").first.evaluate("img => img.src")
    with Image.open(io.BytesIO(block.page.request.get(src).body())) as picture:
        return np.asarray(picture.convert("L"))


def test_after_a_double_click_the_seed_shown_makes_the_grid_shown(page, app_url):
    visible_gif(page)
    small_runs(page)
    set_number(page, "Sampling steps", 200)  # still running at the second click
    old = page.locator("img[src$='.gif']:visible").first.get_attribute("src")
    run = page.get_by_role("button", name="Sample", exact=True)
    run.click()
    page.wait_for_timeout(300)
    run.click(force=True)  # as a visitor's second click: lost if the button is off by now
    page.wait_for_function(
        "src => [...document.querySelectorAll('img')].some(i => i.src.endsWith('.gif') && i.src !== src)", arg=old
    )
    for _ in range(600):
        if run.is_enabled():
            break
        page.wait_for_timeout(100)
    page.wait_for_timeout(1500)  # a second run, if one started, has ended
    grid = shown_pixels(first_picture(page))
    client = Client(app_url, verbose=False)
    again = client.predict(MODEL, 1, "ddpm", 200, "fixed_small", seed_value(page), api_name="/sample")
    with Image.open(again[0]) as picture:
        assert np.array_equal(grid, np.asarray(picture.convert("L"))), "the seed in the box did not make this grid"


def test_stop_with_nothing_running_keeps_the_result(page):
    gif = visible_gif(page).get_attribute("src")
    page.get_by_role("button", name="Stop", exact=True).first.click()
    page.wait_for_timeout(2000)
    assert page.locator(f"img[src='{gif}']:visible").count() == 1, "the result's animation is gone"
    assert image_src(page, "One frame")
    assert page.get_by_label("number input for Frame", exact=True).locator("visible=true").first.is_enabled()
    assert not page.get_by_text("Stopped").first.is_visible()


def test_another_model_clears_the_results_and_is_named_in_the_words(page):
    visible_gif(page)
    page.get_by_label("Model").first.click()
    page.get_by_role("option", name=SHORT_MODEL).click()
    page.get_by_text(f"{SHORT_MODEL} is ready: press Sample to watch it draw pictures.").first.wait_for(timeout=60_000)
    assert page.locator("img[src$='.gif']:visible").count() == 0, "the other model's result is still shown"
    assert page.get_by_text("until pictures appear").first.is_visible()
    assert page.get_by_role("tab", name="Your drawing").is_visible()  # no card: it draws pictures, not digits
    page.get_by_label("Model").first.click()
    page.get_by_role("option", name=MODEL).click()
    visible_gif(page)  # its own start-up result again
    assert page.get_by_text("until digits appear").first.is_visible()
